package server

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/bramble-pi/bramble/pkg/dbsnapshot"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// SnapshotSchedule is when the server snapshots its SQLite datastore
// (--db-snapshot-schedule-cron, --db-snapshot-retention, --db-snapshot-dir).
type SnapshotSchedule struct {
	// Cron is a standard five-field cron expression; "" disables.
	Cron string
	// Retention is how many scheduled snapshots are kept.
	Retention int
	// Dir holds the snapshots.
	Dir string
}

// Check refuses a schedule that cannot run, naming the flag.
func (s SnapshotSchedule) Check() error {
	if s.Cron != "" {
		if _, err := cron.ParseStandard(s.Cron); err != nil {
			return fmt.Errorf("--db-snapshot-schedule-cron: %q: %w", s.Cron, err)
		}
	}
	if s.Retention < 1 {
		return fmt.Errorf("--db-snapshot-retention: %d: keep at least 1 (to disable snapshots, set --db-snapshot-schedule-cron to \"\")", s.Retention)
	}
	if s.Cron != "" && s.Dir == "" {
		return fmt.Errorf("--db-snapshot-dir must not be empty")
	}
	return nil
}

// snapshots saves a snapshot of the SQLite datastore (or of embedded etcd:
// every server its own) on the schedule and
// deletes the oldest scheduled ones beyond the retention (on-demand
// snapshots are the user's to delete). Nothing runs with another datastore
// or an empty schedule.
func (cp *ControlPlane) snapshots() supervisor.Component {
	sched := cp.cfg.Snapshots
	return &supervisor.InProcess{ComponentName: "db-snapshots", StopWait: 5 * time.Second, Setup: func(context.Context) (func(context.Context) error, error) {
		return func(ctx context.Context) error {
			if sched.Cron == "" || cp.cfg.DatastoreEndpoint != "" {
				<-ctx.Done()
				return nil
			}
			spec, err := cron.ParseStandard(sched.Cron)
			if err != nil {
				return fmt.Errorf("--db-snapshot-schedule-cron: %w", err)
			}
			log := cp.log.With("component", "db-snapshots")
			for {
				next := spec.Next(time.Now())
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Until(next)):
				}
				began := time.Now()
				var s dbsnapshot.Snapshot
				if cp.etcd != nil {
					s, err = dbsnapshot.SaveEtcd(ctx, cp.cfg.DataDir, cp.etcd.Client(), sched.Dir, dbsnapshot.ScheduledName, cp.cfg.NodeName, began)
				} else {
					s, err = dbsnapshot.Save(ctx, cp.cfg.DataDir, filepath.Join(cp.paths.DBDir(), "state.db"), sched.Dir, dbsnapshot.ScheduledName, cp.cfg.NodeName, began)
				}
				if err != nil {
					log.Warn("scheduled snapshot failed", "dir", sched.Dir, "err", err)
					continue
				}
				log.Info("snapshot saved", "file", s.Path, "size_kib", s.Size>>10, "took", time.Since(began).Round(time.Millisecond))
				deleted, err := dbsnapshot.Prune(sched.Dir, dbsnapshot.ScheduledName, sched.Retention)
				if len(deleted) > 0 {
					log.Info("old snapshots deleted", "files", deleted, "retention", sched.Retention)
				}
				if err != nil {
					log.Warn("deleting old snapshots failed", "dir", sched.Dir, "err", err)
				}
			}
		}, nil
	}}
}
