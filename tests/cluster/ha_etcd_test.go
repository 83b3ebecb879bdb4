package cluster_test

// TestHAEtcd runs three servers on embedded etcd (pi1 with --cluster-init,
// pi2 and pi3 joining with --server and the server token) and an agent: a
// join with a wrong secret or CA hash is refused and adds no member, every
// node gets Ready with three started voting members, and after kill -9 of
// pi1 (which holds the scheduler's, the controller-manager's and bramble's
// own leases) another server takes them over, schedules and runs a new
// Deployment, every write acknowledged before the kill is there and the
// agent carries on; pi1 started again rejoins as a voting member; deleting
// pi3's Node removes its etcd member.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bramble-pi/bramble/tests/cluster"
	"github.com/bramble-pi/bramble/tests/testutil"
)

func TestHAEtcd(t *testing.T) {
	testutil.RequireRoot(t)
	// In make test (and make test-ha): it passed 4 of 4 runs, 58-76 s.
	begin := time.Now()
	root := testutil.RepoRoot(t)
	busyboxTar := filepath.Join(root, "dist", "images", testutil.Arch(), "busybox.tar")
	if _, err := os.Stat(busyboxTar); err != nil {
		t.Fatalf("%s missing (make test-images builds it): %v", busyboxTar, err)
	}
	stateDir := filepath.Join(t.TempDir(), "cluster")
	quiet := []string{"--shipped-images=false"}
	c, err := cluster.New(cluster.Config{
		Name: "bretcd", StateDir: stateDir, Binary: testutil.Binary(t),
		Killall: filepath.Join(root, "scripts", "bramble-killall.sh"),
		Images:  []string{busyboxTar}, Logf: t.Logf,
		ServerArgs: append([]string{"--disable=coredns,traefik,plumber-api,metrics-server"}, quiet...),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Down(); err != nil {
		t.Fatalf("removing an earlier test cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			keep := filepath.Join(os.TempDir(), fmt.Sprintf("bramble-ha-etcd-logs-%d", time.Now().Unix()))
			for _, n := range c.Nodes() {
				t.Logf("==== %s bramble log (last 4000 bytes):\n%s", n.Host, n.LogTail(4000))
				if b, err := os.ReadFile(n.LogFile()); err == nil && os.MkdirAll(keep, 0o700) == nil {
					_ = os.WriteFile(filepath.Join(keep, n.Host+".log"), b, 0o600)
				}
			}
			t.Logf("node logs kept in %s", keep)
		}
		if err := c.Down(); err != nil {
			t.Errorf("cluster down: %v", err)
		}
		for _, l := range cluster.Leftovers(c.Name(), stateDir) {
			t.Errorf("left after down: %s", l)
		}
		t.Logf("test took %.1f s", time.Since(begin).Seconds())
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var servers []*cluster.Node
	for i := 1; i <= 3; i++ {
		n, err := c.AddNode(cluster.NodeOptions{Host: fmt.Sprintf("pi%d", i), Index: i, Role: cluster.RoleServer})
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, n)
	}
	pi1, pi2, pi3 := servers[0], servers[1], servers[2]
	pi4, err := c.AddNode(cluster.NodeOptions{Host: "pi4", Index: 4, Role: cluster.RoleAgent})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := c.Start(pi1, append(c.ServerArgs(pi1), "--cluster-init"), nil); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitAPI(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, true, pi1); err != nil {
		t.Fatal(err)
	}
	t.Logf("first server Ready after %.1f s", time.Since(pi1.Started).Seconds())
	cs1, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	token, err := c.Token()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, c: c, cs: cs1}
	// Alone, pi1 holds every lease.
	holders := leaseHolders(t, ctx, cs1)
	for _, l := range haLeases {
		if holders[l] == "" {
			t.Fatalf("lease %s has no holder", l)
		}
	}
	joinArgs := func(n *cluster.Node) []string {
		return append(c.ServerArgs(n), "--server", fmt.Sprintf("https://%s:%d", pi1.IP(), cluster.APIPort))
	}

	t.Run("ServerJoinRefused", func(t *testing.T) {
		caHash, secret, ok := strings.Cut(strings.TrimPrefix(token, "K10"), "::server:")
		if !ok {
			t.Fatalf("server token is not K10<hash>::server:<secret>")
		}
		otherHash := sha256.Sum256([]byte("not this cluster's CA"))
		before := tree(t, pi2.DataDir())
		for _, tc := range []struct{ name, token, want string }{
			{"WrongSecret", "K10" + caHash + "::server:" + strings.Repeat("0", len(secret)), "only the server token joins servers"},
			{"WrongCAHash", "K10" + hex.EncodeToString(otherHash[:]) + "::server:" + secret, "CA hash mismatch"},
		} {
			out := e.refusedStart(t, pi2, joinArgs(pi2), []string{"BRAMBLE_TOKEN=" + tc.token}, "server join ("+tc.name+")")
			if !strings.Contains(out, tc.want) {
				t.Errorf("%s: the error does not say %q:\n%s", tc.name, tc.want, out)
			} else {
				t.Logf("%s refused: %s", tc.name, lastLine(out))
			}
			if strings.Contains(out, secret) {
				t.Errorf("%s: the secret is in the log", tc.name)
			}
			if after := tree(t, pi2.DataDir()); after != before {
				t.Errorf("%s: the data dir changed:\nbefore:\n%s\nafter:\n%s", tc.name, before, after)
			}
		}
		if m := members(t, ctx, c, pi1); len(m) != 1 {
			t.Errorf("etcd members after the refused joins:\n%s", strings.Join(m, "\n"))
		}
	})

	joinBegin := time.Now()
	for _, n := range []*cluster.Node{pi2, pi3} {
		if _, err := c.Start(n, joinArgs(n), []string{"BRAMBLE_TOKEN=" + token}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.StartAgent(pi4, token, quiet...); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, true, pi2, pi3, pi4); err != nil {
		t.Fatal(err)
	}
	t.Logf("two more servers and the agent Ready %.1f s after their start", time.Since(joinBegin).Seconds())
	waitVoters(t, ctx, c, pi1, 3)
	cs2 := serverClient(t, c, pi2)

	t.Run("SharedState", func(t *testing.T) {
		for _, f := range []string{"tls/etcd/server-ca.key", "tls/etcd/peer-ca.key", "tls/server-ca.key", "token"} {
			a, err1 := os.ReadFile(filepath.Join(pi1.DataDir(), "server", f))
			b, err2 := os.ReadFile(filepath.Join(pi3.DataDir(), "server", f))
			if err1 != nil || err2 != nil || string(a) != string(b) {
				t.Errorf("%s differs between the servers (%v, %v)", f, err1, err2)
			}
		}
		for _, n := range servers {
			st, err := os.Stat(filepath.Join(n.DataDir(), "server", "db", "etcd"))
			if err != nil || st.Mode().Perm() != 0o700 {
				t.Errorf("%s: etcd data dir: %v %v", n.Host, st, err)
			}
		}
	})

	testutil.WaitFor(t, time.Minute, "pi4's load balancer to list pi2", func() bool {
		return strings.Contains(pi4.LogTail(1<<20), pi2.IP()+":6443")
	})
	if now := leaseHolders(t, ctx, cs2); fmt.Sprint(now) != fmt.Sprint(holders) {
		t.Fatalf("the leases moved before the kill: %v, were %v", now, holders)
	}
	if !strings.HasPrefix(holders["bramble-controllers"], "pi1_") {
		t.Fatalf("bramble-controllers is held by %q, want pi1", holders["bramble-controllers"])
	}
	t.Logf("lease holders before the kill (pi1's): %v", holders)

	if _, err := cs1.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ha"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var acked []string
	writing, stopWriting := context.WithCancel(ctx)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := 0; writing.Err() == nil; i++ {
			name := fmt.Sprintf("w-%d", i)
			_, err := cs1.CoreV1().ConfigMaps("ha").Create(writing, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"i": name}}, metav1.CreateOptions{})
			if err == nil {
				mu.Lock()
				acked = append(acked, name)
				mu.Unlock()
			}
		}
	}()
	time.Sleep(3 * time.Second)
	killed := time.Now()
	if err := syscall.Kill(pi1.Process.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("kill -9 of pi1's bramble (pid %d)", pi1.Process.PID)
	time.Sleep(2 * time.Second)
	stopWriting()
	<-wrote

	t.Run("LeasesTakenOver", func(t *testing.T) {
		deadline := killed.Add(30 * time.Second)
		for {
			now := leaseHolders(t, ctx, cs2)
			var left []string
			for _, l := range haLeases {
				if now[l] == "" || now[l] == holders[l] {
					left = append(left, l)
				}
			}
			if len(left) == 0 {
				t.Logf("all leases taken over %.1f s after the kill: %v", time.Since(killed).Seconds(), now)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("30 s after the kill still held by pi1: %v", left)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})

	t.Run("AcknowledgedWritesKept", func(t *testing.T) {
		mu.Lock()
		want := append([]string(nil), acked...)
		mu.Unlock()
		if len(want) == 0 {
			t.Fatal("no write was acknowledged before the kill")
		}
		list, err := cs2.CoreV1().ConfigMaps("ha").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, cm := range list.Items {
			have[cm.Name] = true
		}
		var missing []string
		for _, n := range want {
			if !have[n] {
				missing = append(missing, n)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("%d of %d acknowledged writes missing: %v", len(missing), len(want), missing)
		}
		t.Logf("%d acknowledged writes before the kill, all there", len(want))
	})

	t.Run("NewDeploymentRuns", func(t *testing.T) {
		created := time.Now()
		one := int32(1)
		labels := map[string]string{"app": "after-failover"}
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "after-failover", Namespace: "ha"},
			Spec: appsv1.DeploymentSpec{
				Replicas: &one,
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: sleepSpec("pi4")},
			},
		}
		if _, err := cs2.AppsV1().Deployments("ha").Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 2*time.Minute, "the new Deployment's pod Running on the agent", func() bool {
			pods, err := cs2.CoreV1().Pods("ha").List(ctx, metav1.ListOptions{LabelSelector: "app=after-failover"})
			if err != nil {
				return false
			}
			for _, p := range pods.Items {
				if p.Status.Phase == corev1.PodRunning {
					return true
				}
			}
			return false
		})
		t.Logf("Deployment created through pi2 Running %.1f s later (%.1f s after the kill)", time.Since(created).Seconds(), time.Since(killed).Seconds())
	})

	t.Run("AgentStaysReady", func(t *testing.T) {
		testutil.WaitFor(t, time.Minute, "pi4's kubelet to renew its lease after the kill", func() bool {
			l, err := cs2.CoordinationV1().Leases("kube-node-lease").Get(ctx, "pi4", metav1.GetOptions{})
			return err == nil && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(killed.Add(3*time.Second))
		})
		if kn, err := cs2.CoreV1().Nodes().Get(ctx, "pi4", metav1.GetOptions{}); err != nil || !cluster.NodeReady(kn) {
			t.Errorf("pi4 not Ready after the kill (%v)", err)
		}
	})

	t.Run("KilledServerRejoins", func(t *testing.T) {
		restarted := time.Now()
		if _, err := c.Restart(pi1); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitReadySince(ctx, restarted, pi1); err != nil {
			t.Fatal(err)
		}
		waitVoters(t, ctx, c, pi2, 3)
		t.Logf("pi1 back, Ready and a voting member %.1f s after its start", time.Since(restarted).Seconds())
	})

	t.Run("DeletedServerNodeLeavesEtcd", func(t *testing.T) {
		deleted := time.Now()
		if err := cs2.CoreV1().Nodes().Delete(ctx, "pi3", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		var last []string
		testutil.WaitFor(t, 2*time.Minute, "pi3's etcd member removed", func() bool {
			last = members(t, ctx, c, pi2)
			return len(last) == 2 && !strings.Contains(strings.Join(last, "\n"), "pi3 ")
		})
		t.Logf("pi3's member removed %.1f s after its Node was deleted:\n%s", time.Since(deleted).Seconds(), strings.Join(last, "\n"))
		// pi3's bramble stops (its kube-proxy sees its Node go, its etcd
		// its member); the cluster carries on with two voters.
		testutil.WaitFor(t, time.Minute, "pi3's bramble to stop", func() bool { return !pi3.Process.Alive() })
		if _, err := cs2.CoreV1().Namespaces().Get(ctx, "ha", metav1.GetOptions{}); err != nil {
			t.Errorf("the cluster does not answer with two servers: %v", err)
		}
	})
}

// members lists the etcd members as server n's `bramble etcd members`
// prints them (without the header).
func members(t *testing.T, ctx context.Context, c *cluster.Cluster, n *cluster.Node) []string {
	t.Helper()
	out, err := c.InNode(n, testutil.Binary(t), "etcd", "members", "--data-dir", n.DataDir()).CombinedOutput()
	if err != nil {
		t.Fatalf("bramble etcd members on %s: %v\n%s", n.Host, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[1:]
}

// waitVoters waits until n's etcd has want started voting members.
func waitVoters(t *testing.T, ctx context.Context, c *cluster.Cluster, n *cluster.Node, want int) {
	t.Helper()
	var last []string
	testutil.WaitFor(t, 2*time.Minute, fmt.Sprintf("%d started voting etcd members", want), func() bool {
		last = members(t, ctx, c, n)
		voters := 0
		for _, l := range last {
			f := strings.Fields(l)
			if len(f) >= 4 && f[2] == "voter" && f[3] == "started" {
				voters++
			}
		}
		return voters == want && len(last) == want
	})
	t.Logf("etcd members:\n%s", strings.Join(last, "\n"))
}
