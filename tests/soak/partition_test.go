package soak

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bramble-pi/bramble/tests/cluster"
	"github.com/bramble-pi/bramble/tests/testutil"
)

// partition is how long the agent is cut off: as long as a Wi-Fi outage a
// Pi cluster should ride out. Pods tolerate an unreachable node for 300 s
// after the node controller marks it (its grace period later), so 5 min
// must cost no pod.
const partition = 5 * time.Minute

// TestAgentPartition cuts an agent's network for 5 minutes (its port on the
// harness's switch goes down; bramble keeps running on it): its pods keep
// running, the server sees the node NotReady, and when the cable is back the
// agent is Ready again by itself with the same pods, the same containers and
// no restart.
func TestAgentPartition(t *testing.T) {
	testutil.RequireRoot(t)
	root := testutil.RepoRoot(t)
	busybox := filepath.Join(root, "dist", "images", testutil.Arch(), "busybox.tar")
	if _, err := os.Stat(busybox); err != nil {
		t.Fatalf("%s missing (make test-images builds it): %v", busybox, err)
	}
	stateDir := filepath.Join(t.TempDir(), "cluster")
	c, err := cluster.New(cluster.Config{
		Name: "brpart", StateDir: stateDir,
		Binary: testutil.Binary(t), Killall: filepath.Join(root, "scripts", "bramble-killall.sh"),
		Images: []string{busybox}, Logf: t.Logf,
		ServerArgs: []string{"--disable=traefik,coredns,plumber-api"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Down(); err != nil {
		t.Fatalf("removing an earlier test cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes() {
				t.Logf("==== %s bramble log (last 3000 bytes):\n%s", n.Host, n.LogTail(3000))
			}
		}
		if err := c.Down(); err != nil {
			t.Errorf("cluster down: %v", err)
		}
		for _, l := range cluster.Leftovers(c.Name(), stateDir) {
			t.Errorf("left after down: %s", l)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if _, err := c.Up(ctx, 2); err != nil {
		t.Fatalf("cluster up: %v", err)
	}
	cs, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	agent, err := c.Node("pi2")
	if err != nil {
		t.Fatal(err)
	}
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := c.Kubectl(ctx, args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	kubectl("create", "namespace", "part")
	testutil.WaitFor(t, time.Minute, "the default service account of namespace part", func() bool {
		_, err := cs.CoreV1().ServiceAccounts("part").Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	})
	apply := c.KubectlCmd(ctx, "apply", "-f", "-")
	apply.Stdin = strings.NewReader(sleepers)
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	var before string
	testutil.WaitFor(t, 3*time.Minute, "3 sleepers ready on pi2", func() bool {
		var n int
		before, n = podsOf(ctx, t, cs)
		return n == 3
	})
	t.Logf("pods on pi2: %s", before)
	containersBefore := runningContainers(t, c, agent)

	cut := time.Now()
	if err := c.SetLink(agent, false); err != nil {
		t.Fatal(err)
	}
	linkBack := func() {
		if err := c.SetLink(agent, true); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(linkBack) // a second "up" is harmless
	if err := c.WaitReady(ctx, false, agent); err != nil {
		t.Fatal(err)
	}
	t.Logf("pi2 NotReady %.0f s after its cable was cut", time.Since(cut).Seconds())
	for time.Since(cut) < partition {
		time.Sleep(min(time.Minute, time.Until(cut.Add(partition))))
		if got := runningContainers(t, c, agent); got != containersBefore {
			t.Errorf("%.0f s into the partition the containers on pi2 changed:\nbefore: %s\nnow:    %s",
				time.Since(cut).Seconds(), containersBefore, got)
		}
	}
	linkBack()
	back := time.Now()
	if err := c.WaitReadySince(ctx, back, agent); err != nil {
		t.Fatal(err)
	}
	t.Logf("pi2 Ready %.1f s after its cable was back (cut for %.0f s)", time.Since(back).Seconds(), back.Sub(cut).Seconds())
	var after string
	testutil.WaitFor(t, 2*time.Minute, "3 sleepers ready on pi2 again", func() bool {
		var n int
		after, n = podsOf(ctx, t, cs)
		return n == 3
	})
	if after != before {
		t.Errorf("pods changed across the partition:\nbefore: %s\nafter:  %s", before, after)
	}
	if got := runningContainers(t, c, agent); got != containersBefore {
		t.Errorf("containers on pi2 changed across the partition:\nbefore: %s\nafter:  %s", containersBefore, got)
	}
}

// podsOf describes namespace part's pods (uid, node, container IDs, restart
// counts) and counts them when all are ready (-1 when one is not).
func podsOf(ctx context.Context, t *testing.T, cs *kubernetes.Clientset) (string, int) {
	t.Helper()
	pods, err := cs.CoreV1().Pods("part").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Logf("listing pods: %v", err)
		return "", 0
	}
	var out []string
	ready := 0
	for _, p := range pods.Items {
		for _, s := range p.Status.ContainerStatuses {
			out = append(out, fmt.Sprintf("%s uid=%s node=%s %s restarts=%d", p.Name, p.UID, p.Spec.NodeName, s.ContainerID, s.RestartCount))
			if s.Ready && p.DeletionTimestamp == nil {
				ready++
			}
		}
	}
	sort.Strings(out)
	if len(out) != ready {
		ready = -1 // a pod not ready, or going away
	}
	return strings.Join(out, "; "), ready
}

// runningContainers lists the IDs of the containers running on node n, as
// its containerd knows them (asked inside the node, so it works while the
// node is cut off).
func runningContainers(t *testing.T, c *cluster.Cluster, n *cluster.Node) string {
	t.Helper()
	cmd := c.InNode(n, testutil.Binary(t), "crictl", "ps", "-q", "--state", "running")
	cmd.Env = append(cmd.Env, "BRAMBLE_DATA_DIR="+n.DataDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("crictl ps on %s: %v\n%s", n.Host, err, stderr.String())
	}
	ids := strings.Fields(string(out))
	sort.Strings(ids)
	return strings.Join(ids, " ")
}

// sleepers run on the agent only, from the test's own busybox image.
const sleepers = `apiVersion: apps/v1
kind: Deployment
metadata: {name: sleepers, namespace: part}
spec:
  replicas: 3
  selector: {matchLabels: {app: sleepers}}
  template:
    metadata: {labels: {app: sleepers}}
    spec:
      nodeSelector: {kubernetes.io/hostname: pi2}
      terminationGracePeriodSeconds: 1
      containers:
      - name: sleep
        image: ` + testutil.Busybox + `
        imagePullPolicy: Never
        command: [sleep, "1000000"]
`
