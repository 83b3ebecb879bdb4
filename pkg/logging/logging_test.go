package logging

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// Component Info lines are hidden at the default level, except those that
// explain why bramble is about to stop, which become warnings with a hint.
func TestDemoteAndPromote(t *testing.T) {
	var buf bytes.Buffer
	base := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})
	log := slog.New(&demote{Handler: base}).With("src", "k8s")
	log.Info("Starting endpoint slice config controller")
	log.Info("Node is being deleted", "node", "pi3")
	log.Warn("a warning")
	log.Debug("debug detail")
	out := buf.String()
	if strings.Contains(out, "endpoint slice") || strings.Contains(out, "debug detail") {
		t.Errorf("ordinary Info or Debug lines shown:\n%s", out)
	}
	if !strings.Contains(out, `level=WARN msg="Node is being deleted" src=k8s node=pi3 means=`) {
		t.Errorf("the node-deleted line is not a warning with its meaning:\n%s", out)
	}
	if !strings.Contains(out, `msg="a warning"`) {
		t.Errorf("warning lost:\n%s", out)
	}

	buf.Reset()
	log = slog.New(&demote{Handler: slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), debug: true})
	log.Info("Starting endpoint slice config controller")
	if !strings.Contains(buf.String(), "level=INFO") {
		t.Errorf("--debug hides Info lines:\n%s", buf.String())
	}
}

// Known-benign component errors and those logged while bramble stops are
// hidden at the default level; other errors are shown.
func TestBenignAndStopErrorsHidden(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(&demote{Handler: slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})})
	log.Error("Failed to read data from checkpoint", "err", "checkpoint is not found")
	log.Error("Failed to pull image", "err", "real failure")
	log.Error("Eviction manager: failed to get summary stats", "err", errors.New(`failed to get node info: node "pi1" not found`))
	log.Error("Error updating node status, will retry", "err", `error getting node "pi1": node "pi1" not found`)
	log.Error("Error updating node status, will retry", "err", "connection refused")
	if out := buf.String(); strings.Contains(out, "checkpoint") || !strings.Contains(out, "real failure") ||
		strings.Contains(out, "summary stats") || strings.Count(out, "Error updating node status") != 1 || !strings.Contains(out, "connection refused") {
		t.Errorf("before the stop:\n%s", out)
	}
	buf.Reset()
	Stopping()
	defer stopping.Store(false)
	log.Error("GenericPLEG: Unable to retrieve pods", "err", "context canceled")
	log.Info("Node is being deleted", "node", "pi3")
	if out := buf.String(); strings.Contains(out, "GenericPLEG") || !strings.Contains(out, "Node is being deleted") {
		t.Errorf("while stopping:\n%s", out)
	}
}

// The aggregation layer's errors about an API bramble serves itself are
// hidden until it serves; then they are shown, and other APIs' always.
func TestPendingAPIErrorsHidden(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(&demote{Handler: slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})})
	APIPending("v1beta1.metrics.k8s.io", "metrics.k8s.io/v1beta1", "kube-system/metrics-server")
	defer APIServing("v1beta1.metrics.k8s.io", "metrics.k8s.io/v1beta1", "kube-system/metrics-server")
	// klog's errors without an err: the name is in the message.
	log.Error(`error resolving kube-system/metrics-server: service "metrics-server" not found`)
	log.Error("Unhandled Error", "err", `v1beta1.metrics.k8s.io failed with: failing or missing response from https://192.0.2.2:10251: connection refused`)
	log.Error("Unable to get all supported resources from server", "err", `unable to retrieve the complete list of server APIs: metrics.k8s.io/v1beta1: stale GroupVersion discovery: metrics.k8s.io/v1beta1`)
	log.Error("Unhandled Error", "err", `loading OpenAPI spec for "v1beta1.custom.example.com" failed`)
	if out := buf.String(); strings.Contains(out, "metrics.k8s.io") || strings.Contains(out, "metrics-server") || !strings.Contains(out, "custom.example.com") {
		t.Errorf("while pending:\n%s", out)
	}
	buf.Reset()
	APIServing("v1beta1.metrics.k8s.io", "metrics.k8s.io/v1beta1")
	log.Error("Unhandled Error", "err", `v1beta1.metrics.k8s.io failed with: 503`)
	if out := buf.String(); !strings.Contains(out, "metrics.k8s.io") {
		t.Errorf("once serving:\n%s", out)
	}
}
