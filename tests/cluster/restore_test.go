package cluster_test

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// restoreOnFreshServer: the server's SD card dies. The user saved a snapshot
// to a USB stick, puts a fresh card in (the server node wiped: data dir,
// kubelet dir, containers), restores the snapshot and starts the server with
// the same command. The cluster comes back under its own CA and token: a
// ConfigMap written before the snapshot is there, and the agents, never
// touched, are Ready again by themselves with the same pods and containers.
func (e *env) restoreOnFreshServer(t *testing.T) {
	server := e.node("pi1")
	usb := filepath.Join(e.c.StateDir(), "usb-stick")
	bin := testutil.Binary(t)
	snapshot := func(args ...string) string {
		t.Helper()
		full := append([]string{"db", "snapshot", args[0], "--data-dir", server.DataDir(), "--db-snapshot-dir", usb}, args[1:]...)
		out, err := e.c.InNode(server, bin, full...).CombinedOutput()
		if err != nil {
			t.Fatalf("bramble %s: %v\n%s", strings.Join(full, " "), err, out)
		}
		return string(out)
	}
	// The pods on the agents as the snapshot has them (the add-ons rolled
	// out first, when this check runs alone).
	e.kubectl(t, "", "-n", "kube-system", "rollout", "status", "daemonset/traefik", "--timeout=2m")
	e.kubectl(t, "", "-n", plumberNS, "rollout", "status", "deployment/plumber-api", "--timeout=2m")
	before := e.readyAgentPods(t)
	e.kubectl(t, "", "create", "configmap", "before-the-card-died", "--from-literal=k=v")
	out := snapshot("save", "--name", "usb")
	file := regexp.MustCompile(`usb-[a-z0-9.-]+-\d+\.db`).FindString(out)
	if file == "" {
		t.Fatalf("save does not name the snapshot file:\n%s", out)
	}

	if _, err := e.c.Stop(server, 30*time.Second); err != nil {
		t.Error(err)
	}
	if err := e.c.Wipe(server); err != nil {
		t.Fatal(err)
	}
	t.Logf("restore: %s", snapshot("restore", filepath.Join(usb, file)))
	begin := time.Now()
	if _, err := e.c.Restart(server); err != nil {
		t.Fatal(err)
	}
	if err := e.c.WaitAPI(e.ctx(3 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := e.c.WaitReadySince(e.ctx(3*time.Minute), server.Started, server); err != nil {
		t.Fatal(err)
	}
	if err := e.c.WaitReady(e.ctx(3*time.Minute), true, e.c.Nodes()[:3]...); err != nil {
		t.Fatal(err)
	}
	e.agentLeasesRenewed(t, server.Started)
	t.Logf("restored server: API and all nodes Ready %.1f s after it started", time.Since(begin).Seconds())
	if got := e.kubectl(t, "", "get", "configmap", "before-the-card-died", "-o", "jsonpath={.data.k}"); got != "v" {
		t.Errorf("configmap after the restore: %q", got)
	}
	e.agentPodsKept(t, before, "the restore")
	testutil.WaitFor(t, 3*time.Minute, "odd from every node through the ingress", func() bool {
		for _, ip := range []string{"10.250.0.1", "10.250.0.2", "10.250.0.3"} {
			if code, body := e.c.Get("http://" + ip + "/parity?int=15"); code != 200 || strings.TrimSpace(body) != "odd" {
				return false
			}
		}
		return true
	})
}
