// Package logging sets up bramble's one structured logger and routes the logs
// of the embedded Kubernetes components (klog) and kine (logrus) through it.
//
// At the default level bramble is quiet: its own Info lines, and only warnings
// and errors from the components. --debug shows everything.
package logging

import (
	"context"
	"flag"
	"io"
	"log/slog"

	"github.com/sirupsen/logrus"
	"k8s.io/klog/v2"
)

// Setup configures process-wide logging once and returns bramble's logger.
func Setup(w io.Writer, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	base := slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})
	log := slog.New(base)
	slog.SetDefault(log)

	// klog: component Info lines are Debug for us; errors stay errors.
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	verbosity := "0"
	if debug {
		verbosity = "2"
	}
	_ = fs.Set("v", verbosity)
	_ = fs.Set("logtostderr", "true")
	klog.SetSlogLogger(slog.New(&demote{Handler: base, debug: debug}).With("src", "k8s"))

	logrus.SetOutput(w)
	logrus.SetLevel(logrus.WarnLevel)
	if debug {
		logrus.SetLevel(logrus.DebugLevel)
	}
	return log
}

// demote turns Info records into Debug ones unless debug logging is on,
// except the few that explain a stop (promoted).
type demote struct {
	slog.Handler
	debug bool
}

// promoted are component Info lines logged just before the component ends
// bramble's process: a user must see why bramble stopped. By message, what
// it means for a bramble user.
var promoted = map[string]string{
	"Node is being deleted": "this node's Node object was deleted (kubectl delete node): kube-proxy stops bramble; " +
		"started again (by its service) within 30 s, the node registers again and keeps its name",
	"NodeIPs changed for the node":  "the node's address changed: kube-proxy stops bramble; start it again to use the new address",
	"PodCIDRs changed for the node": "the node's pod network changed: kube-proxy stops bramble; start it again",
}

func (d *demote) Enabled(ctx context.Context, l slog.Level) bool {
	if !d.debug && l < slog.LevelWarn {
		return l >= slog.LevelInfo // Handle keeps only the promoted ones
	}
	return d.Handler.Enabled(ctx, l)
}

func (d *demote) Handle(ctx context.Context, r slog.Record) error {
	if !d.debug && r.Level < slog.LevelWarn {
		means, ok := promoted[r.Message]
		if !ok {
			return nil
		}
		r = r.Clone()
		r.Level = slog.LevelWarn
		r.AddAttrs(slog.String("means", means))
	}
	return d.Handler.Handle(ctx, r)
}

func (d *demote) WithAttrs(a []slog.Attr) slog.Handler {
	return &demote{Handler: d.Handler.WithAttrs(a), debug: d.debug}
}

func (d *demote) WithGroup(n string) slog.Handler {
	return &demote{Handler: d.Handler.WithGroup(n), debug: d.debug}
}

// Discard is a logger that drops everything, for tests.
func Discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
