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
	"strings"
	"sync"
	"sync/atomic"

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

// benign are component errors that say nothing is wrong: the first start
// (no checkpoint yet), start-up order (the node registers a moment after the
// kubelet starts), and kube-proxy advice bramble follows on purpose. Shown
// with --debug.
var benign = map[string]bool{
	"Failed to read data from checkpoint":                                                   true, // first start
	"eviction manager: failed to check if we have separate container filesystem. Ignoring.": true, // one filesystem: normal
	"Unable to register mirror pod because node is not registered yet":                      true, // start-up order
	"Failed to get node when trying to set owner ref to the node lease":                     true, // start-up order
	"Skipping pod synchronization":                                                          true, // until the runtime's first status
	"Image garbage collection failed once. Stats initialization may not have completed yet": true, // the kubelet retries
	"Kube-proxy configuration may be incomplete or incorrect":                               true, // NodePorts on all addresses, as k3s
	"Error getting the current node from lister":                                            true, // start-up order
	// Without CAP_SYS_RESOURCE (a container, a VM like this one's): bramble
	// warns about it once itself, with what it means (pkg/hostcheck).
	"Failed to set rlimit on max file handles":             true,
	"Failed to ensure process in container with oom score": true,
	// kine answers the delete of a missing key as done, so the apiserver
	// says this at every start, the first one included.
	"Found stale data, removed previous endpoints on kubernetes service, apiserver didn't exit successfully previously": true,
}

// benignBeforeRegistration are kubelet errors that say nothing is wrong when
// their err is that the node does not exist: the kubelet's first seconds,
// before its Node is registered. With another err they are shown.
var benignBeforeRegistration = map[string]bool{
	"Eviction manager: failed to get summary stats": true,
	"Error updating node status, will retry":        true,
}

// errText is the record's err attribute as text ("" without one).
func errText(r slog.Record) string {
	s := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "err" {
			return true
		}
		s = a.Value.String()
		return false
	})
	return s
}

// nodeNotFound reports whether the record's err says a node was not found.
func nodeNotFound(r slog.Record) bool {
	s := errText(r)
	return strings.Contains(s, `node "`) && strings.HasSuffix(s, `" not found`)
}

// pendingAPIs name the aggregated APIs (APIService and group/version) that
// bramble serves in-process and that do not serve yet: the apiserver's
// aggregation layer and the controllers' discovery start first and report
// each of them as failing (about a dozen lines per start) until its server
// is up and found. Those reports are start-up order, shown with --debug;
// once the API serves, they are shown again.
var pendingAPIs sync.Map

// APIPending marks an aggregated API that bramble will serve but does not
// serve yet, by the names the components' errors use.
func APIPending(names ...string) {
	for _, n := range names {
		pendingAPIs.Store(n, true)
	}
}

// APIServing marks an aggregated API as serving.
func APIServing(names ...string) {
	for _, n := range names {
		pendingAPIs.Delete(n)
	}
}

// aboutPendingAPI reports whether the record's err, or its message (klog's
// errors without an err), names an aggregated API that does not serve yet.
func aboutPendingAPI(r slog.Record) bool {
	s := errText(r) + "\n" + r.Message
	about := false
	if s != "" {
		pendingAPIs.Range(func(k, _ any) bool {
			about = strings.Contains(s, k.(string))
			return !about
		})
	}
	return about
}

// stopping is set once bramble stops: the components' errors from then on
// are the stop itself (containerd and the apiserver going away under the
// kubelet), not failures, and are shown only with --debug.
var stopping atomic.Bool

// Stopping marks the start of bramble's stop for the components' logs.
func Stopping() { stopping.Store(true) }

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
	} else if !d.debug && (benign[r.Message] || stopping.Load() || (benignBeforeRegistration[r.Message] && nodeNotFound(r)) || aboutPendingAPI(r)) {
		return nil
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
