// Package datastore runs kine in-process, giving the apiserver an etcd API on a
// unix socket backed by SQLite (the default) or by any endpoint kine accepts.
package datastore

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/k3s-io/kine/pkg/drivers/generic"
	"github.com/k3s-io/kine/pkg/drivers/sqlite"
	"github.com/k3s-io/kine/pkg/endpoint"
	"google.golang.org/grpc"
)

// Config is what the datastore needs.
type Config struct {
	// DBDir holds state.db when Endpoint is empty.
	DBDir string
	// Endpoint is a kine endpoint (sqlite://, postgres://, mysql://, https://etcd...).
	// Empty means SQLite at DBDir/state.db.
	Endpoint string
	// Socket is where the etcd API is served for the apiserver.
	Socket string
}

// Datastore is the kine component.
type Datastore struct {
	cfg    Config
	log    *slog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup
	exited chan error
	etcd   endpoint.ETCDConfig
	// checkDB confirms kine's creates (checkCreates), SQLite only.
	checkDB *sql.DB
}

// New returns the datastore component.
func New(cfg Config, log *slog.Logger) *Datastore {
	return &Datastore{cfg: cfg, log: log, exited: make(chan error, 1)}
}

// Name implements supervisor.Component.
func (d *Datastore) Name() string { return "datastore" }

// SQLitePath is the SQLite file used when no endpoint is configured.
func (d *Datastore) SQLitePath() string { return filepath.Join(d.cfg.DBDir, "state.db") }

// Init creates the database directory (also that of a sqlite:// endpoint).
func (d *Datastore) Init(context.Context) error {
	dir := d.cfg.DBDir
	if file, ok := strings.CutPrefix(d.cfg.Endpoint, "sqlite://"); ok {
		// kine retries a file in a missing directory for minutes.
		file, _, _ = strings.Cut(file, "?")
		dir = filepath.Dir(file)
	}
	if d.cfg.Endpoint == "" || strings.HasPrefix(d.cfg.Endpoint, "sqlite://") {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(d.cfg.Socket), 0o700); err != nil {
		return fmt.Errorf("create socket dir: %w", err)
	}
	_ = os.Remove(d.cfg.Socket) // a stale socket from an unclean stop
	return nil
}

func (d *Datastore) endpoint() string {
	if d.cfg.Endpoint != "" {
		return d.cfg.Endpoint
	}
	return "sqlite://" + d.SQLitePath() + "?" + sqliteParams
}

// sqliteParams are kine's defaults (WAL; a busy timeout rides out
// compaction) with synchronous=FULL instead of NORMAL: every commit is
// fsynced before kine answers, so a power cut loses no write the apiserver
// acknowledged. With NORMAL, tests/reliability's power cut lost the last 44
// of 2975 acknowledged creates (the WAL's tail still in the page cache).
// The cost, measured idle (docs/ARCHITECTURE.md): +9 % bytes written by
// bramble, +16 % at the device, creates ~4 ms slower at the median.
var sqliteParams = strings.Replace(sqlite.DefaultParams, "_synchronous=NORMAL", "_synchronous=FULL", 1)

// Start opens the backend and serves the etcd API on the socket.
func (d *Datastore) Start(ctx context.Context) error {
	if d.cfg.Endpoint == "" {
		if err := prepareSQLite(ctx, d.SQLitePath(), d.log); err != nil {
			return err
		}
	}
	if err := probe(ctx, d.cfg.Endpoint); err != nil {
		return err
	}
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancel = cancel
	var grpcSrv *grpc.Server
	if d.cfg.Endpoint == "" {
		check, err := openSQLite(d.SQLitePath())
		if err != nil {
			cancel()
			return err
		}
		d.checkDB = check
		grpcSrv = grpcServer(sqliteStored(check))
	}
	etcd, err := endpoint.Listen(kctx, endpoint.Config{
		GRPCServer:           grpcSrv,
		Listener:             "unix://" + d.cfg.Socket,
		Endpoint:             d.endpoint(),
		WaitGroup:            &d.wg,
		ConnectionPoolConfig: generic.ConnectionPoolConfig{MaxIdle: 2, MaxLifetime: 0, MaxIdleTime: 2 * time.Minute},
		CompactInterval:      compactInterval,
		CompactTimeout:       5 * time.Second,
		CompactMinRetain:     1000,
		CompactBatchSize:     1000,
		PollBatchSize:        500,
		// Kine polls the database for changes made by other writers: with
		// one server on SQLite there are none, and polling costs CPU and
		// wakeups on a Pi; a shared datastore has other servers' writes,
		// which this server's watches see only at the next poll.
		PollInterval:        d.pollInterval(),
		NotifyInterval:      5 * time.Second,
		EmulatedETCDVersion: "3.6.11",
		LogFormat:           "plain",
	})
	if err != nil {
		cancel()
		if d.checkDB != nil {
			d.checkDB.Close()
		}
		if d.cfg.Endpoint != "" {
			return fmt.Errorf("start kine on --datastore-endpoint %s: %w", Redacted(d.cfg.Endpoint), err)
		}
		return fmt.Errorf("start kine: %w", err)
	}
	d.etcd = etcd
	if d.cfg.Endpoint == "" {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.vacuumLoop(kctx)
		}()
	}
	return nil
}

func (d *Datastore) pollInterval() time.Duration {
	if Shared(d.cfg.Endpoint) {
		return time.Second
	}
	return 5 * time.Second
}

// Redacted is an endpoint without its password, for logs and errors. It
// works on kine's DSNs that are not URLs too (mysql://user:pass@tcp(host)/db).
func Redacted(endpoint string) string {
	scheme, rest, ok := strings.Cut(endpoint, "://")
	if !ok {
		return "(not an endpoint URL)"
	}
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return endpoint
	}
	user, _, hasPassword := strings.Cut(rest[:at], ":")
	if !hasPassword {
		return endpoint
	}
	return scheme + "://" + user + ":xxxxx" + rest[at:]
}

// Schemes are the endpoint schemes kine serves (besides SQLite's).
var Schemes = []string{"sqlite", "postgres", "postgresql", "mysql", "http", "https", "unix", "nats"}

// CheckEndpoint refuses a --datastore-endpoint kine does not know, before
// anything starts; the error never holds the password.
func CheckEndpoint(endpoint string) error {
	if endpoint == "" {
		return nil
	}
	scheme, rest, ok := strings.Cut(endpoint, "://")
	if !ok || !slices.Contains(Schemes, scheme) {
		return fmt.Errorf("--datastore-endpoint %s: want postgres://user:password@host:5432/db, mysql://user:password@tcp(host:3306)/db, sqlite://file or an etcd https:// URL", Redacted(endpoint))
	}
	if rest == "" {
		return fmt.Errorf("--datastore-endpoint %s: no host or file", Redacted(endpoint))
	}
	return nil
}

// Shared says whether an endpoint is a datastore other servers can use
// too (anything but SQLite).
func Shared(endpoint string) bool {
	return endpoint != "" && !strings.HasPrefix(endpoint, "sqlite://")
}

// compactInterval is how often kine deletes old revisions.
const compactInterval = 5 * time.Minute

// vacuumLoop gives the pages kine's compaction frees back to the filesystem,
// shortly after each compaction.
func (d *Datastore) vacuumLoop(ctx context.Context) {
	db, err := openSQLite(d.SQLitePath())
	if err != nil {
		d.log.Warn("database vacuum off", "err", err)
		return
	}
	defer db.Close()
	t := time.NewTicker(compactInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		freed, err := vacuumStep(ctx, db)
		switch {
		case err != nil && ctx.Err() == nil:
			d.log.Warn("database vacuum", "file", d.SQLitePath(), "err", err)
		case freed > 0:
			d.log.Debug("database vacuumed", "file", d.SQLitePath(), "freed_kib", freed*sqlitePageSize>>10)
		}
	}
}

// Endpoints are the etcd URLs for the apiserver.
func (d *Datastore) Endpoints() []string { return d.etcd.Endpoints }

// Ready waits until the socket accepts connections (or, for an external etcd,
// returns at once: the apiserver waits for it).
func (d *Datastore) Ready(ctx context.Context) error {
	if len(d.etcd.Endpoints) == 0 || !strings.HasPrefix(d.etcd.Endpoints[0], "unix://") {
		return nil
	}
	sock := strings.TrimPrefix(d.etcd.Endpoints[0], "unix://")
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kine socket %s: %w", sock, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Exited never fires on its own: kine reports failures through the apiserver.
func (d *Datastore) Exited() <-chan error { return d.exited }

// Stop closes the backend and waits for kine's goroutines.
func (d *Datastore) Stop(ctx context.Context) error {
	if d.cancel == nil {
		return nil
	}
	d.cancel()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
		if d.checkDB != nil {
			return d.checkDB.Close()
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kine did not stop: %w", ctx.Err())
	}
}
