package cluster_test

// TestHAPostgres runs two servers on one PostgreSQL (Debian's, started by
// the harness in the switch namespace) and an agent: a server joins with
// the server token (a wrong secret or CA hash is refused and leaves its data
// dir as it was), every node gets Ready, and after kill -9 of the server
// that holds the scheduler's, the controller-manager's and bramble's own
// leases the other takes them over, schedules and runs a new Deployment,
// every write acknowledged before the kill is there, and the agent (joined
// to the killed server) carries on through the other.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
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
	"k8s.io/client-go/kubernetes"

	"github.com/bramble-pi/bramble/tests/cluster"
	"github.com/bramble-pi/bramble/tests/testutil"
)

// haLeases are the leases only one server may hold at a time.
var haLeases = []string{"kube-scheduler", "kube-controller-manager", "bramble-controllers"}

func TestHAPostgres(t *testing.T) {
	testutil.RequireRoot(t)
	// Not in CI yet: in 2 of 6 runs the joining server stopped about a
	// minute after start without an error line (issue 17's note); `make
	// test-ha` runs it.
	if os.Getenv("BRAMBLE_TEST_HA") != "1" {
		t.Skip("BRAMBLE_TEST_HA=1 runs it (make test-ha): the joining server's unexplained stop is being investigated")
	}
	begin := time.Now()
	root := testutil.RepoRoot(t)
	busyboxTar := filepath.Join(root, "dist", "images", testutil.Arch(), "busybox.tar")
	if _, err := os.Stat(busyboxTar); err != nil {
		t.Fatalf("%s missing (make test-images builds it): %v", busyboxTar, err)
	}
	stateDir := filepath.Join(t.TempDir(), "cluster")
	// Only what the checks need: no bundled add-on images to import or run
	// (the in-process controllers stay, elected).
	quiet := []string{"--shipped-images=false"}
	c, err := cluster.New(cluster.Config{
		Name: "brha", StateDir: stateDir, Binary: testutil.Binary(t),
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
	var pg *cluster.Postgres
	// Cleanups run last first: the cluster goes down while PostgreSQL
	// still serves it, then PostgreSQL stops.
	t.Cleanup(func() {
		if err := pg.Stop(); err != nil {
			t.Errorf("postgres: %v", err)
		}
		if pg != nil {
			if _, err := os.Stat(pg.Dir); err == nil {
				t.Errorf("postgres dir %s left", pg.Dir)
			}
		}
		t.Logf("test took %.1f s", time.Since(begin).Seconds())
	})
	t.Cleanup(func() {
		if t.Failed() {
			keep := filepath.Join(os.TempDir(), fmt.Sprintf("bramble-ha-test-logs-%d", time.Now().Unix()))
			for _, n := range c.Nodes() {
				t.Logf("==== %s bramble log (last 4000 bytes):\n%s", n.Host, n.LogTail(4000))
				if b, err := os.ReadFile(n.LogFile()); err == nil && os.MkdirAll(keep, 0o700) == nil {
					_ = os.WriteFile(filepath.Join(keep, n.Host+".log"), b, 0o600)
				}
			}
			t.Logf("node logs kept in %s", keep)
			if pg != nil {
				t.Logf("==== postgres log:\n%s", pg.LogTail())
			}
		}
		if err := c.Down(); err != nil {
			t.Errorf("cluster down: %v", err)
		}
		for _, l := range cluster.Leftovers(c.Name(), stateDir) {
			t.Errorf("left after down: %s", l)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	pi1, err := c.AddNode(cluster.NodeOptions{Host: "pi1", Index: 1, Role: cluster.RoleServer})
	if err != nil {
		t.Fatal(err)
	}
	pi2, err := c.AddNode(cluster.NodeOptions{Host: "pi2", Index: 2, Role: cluster.RoleServer})
	if err != nil {
		t.Fatal(err)
	}
	pi3, err := c.AddNode(cluster.NodeOptions{Host: "pi3", Index: 3, Role: cluster.RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	if pg, err = c.StartPostgres(ctx); err != nil {
		t.Fatal(err)
	}
	// In the environment, never on a command line (ps, the harness's log).
	dbEnv := "BRAMBLE_DATASTORE_ENDPOINT=" + pg.Endpoint("kine")

	if _, err := c.Start(pi1, c.ServerArgs(pi1), []string{dbEnv}); err != nil {
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
	joinArgs := append(c.ServerArgs(pi2), "--server", fmt.Sprintf("https://%s:%d", pi1.IP(), cluster.APIPort))

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
			{"AgentStyleToken", "K10" + caHash + "::node:" + secret, "only the server token"},
		} {
			out := e.refusedStart(t, pi2, joinArgs, []string{dbEnv, "BRAMBLE_TOKEN=" + tc.token}, "server join ("+tc.name+")")
			if !strings.Contains(out, tc.want) {
				t.Errorf("%s: the error does not say %q:\n%s", tc.name, tc.want, out)
			} else {
				t.Logf("%s refused: %s", tc.name, lastLine(out))
			}
			if strings.Contains(out, secret) || strings.Contains(out, pg.Password) {
				t.Errorf("%s: a secret is in the log", tc.name)
			}
			if after := tree(t, pi2.DataDir()); after != before {
				t.Errorf("%s: the data dir changed:\nbefore:\n%s\nafter:\n%s", tc.name, before, after)
			}
		}
	})

	t.Run("NewClusterOnUsedDatastoreRefused", func(t *testing.T) {
		before := tree(t, pi2.DataDir())
		out := e.refusedStart(t, pi2, c.ServerArgs(pi2), []string{dbEnv}, "second server without --server")
		if !strings.Contains(out, "holds a cluster already") || !strings.Contains(out, "postgres://bramble:xxxxx@") {
			t.Errorf("the error does not say the datastore holds a cluster:\n%s", out)
		} else {
			t.Logf("refused: %s", lastLine(out))
		}
		if strings.Contains(out, pg.Password) {
			t.Error("the password is in the log")
		}
		if after := tree(t, pi2.DataDir()); after != before {
			t.Errorf("the data dir changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})

	t.Run("WrongDatastorePasswordRefusedAtOnce", func(t *testing.T) {
		dir := filepath.Join(pi2.Dir, "data-wrong-password")
		args := []string{"server", "--data-dir", dir, "--node-name", "pi2", "--node-ip", pi2.IP(), "--disable-agent", "--write-kubeconfig", filepath.Join(dir, "kubeconfig.yaml")}
		wrong := strings.Replace(pg.Endpoint("kine"), pg.Password, "not-the-password", 1)
		started := time.Now()
		out := e.refusedStart(t, pi2, args, []string{"BRAMBLE_DATASTORE_ENDPOINT=" + wrong}, "server with a wrong datastore password")
		if !strings.Contains(out, "the database refused the user or password") || !strings.Contains(out, "postgres://bramble:xxxxx@") {
			t.Errorf("the error does not say the database refused the (redacted) user:\n%s", out)
		} else {
			t.Logf("refused after %.1f s: %s", time.Since(started).Seconds(), lastLine(out))
		}
		if strings.Contains(out, "not-the-password") {
			t.Error("the password is in the log")
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Error(err)
		}
	})

	joinBegin := time.Now()
	if _, err := c.Start(pi2, joinArgs, []string{dbEnv, "BRAMBLE_TOKEN=" + token}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartAgent(pi3, token, quiet...); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, true, pi2, pi3); err != nil {
		t.Fatal(err)
	}
	t.Logf("second server and agent Ready %.1f s after their start", time.Since(joinBegin).Seconds())
	cs2 := serverClient(t, c, pi2)

	t.Run("SharedState", func(t *testing.T) {
		for _, f := range []string{"tls/server-ca.key", "tls/client-ca.key", "tls/service.key", "cred/encryption-config.yaml", "cred/addon-tie.key", "token"} {
			a, err1 := os.ReadFile(filepath.Join(pi1.DataDir(), "server", f))
			b, err2 := os.ReadFile(filepath.Join(pi2.DataDir(), "server", f))
			if err1 != nil || err2 != nil || string(a) != string(b) {
				t.Errorf("%s differs between the servers (%v, %v)", f, err1, err2)
			}
			if st, err := os.Stat(filepath.Join(pi2.DataDir(), "server", f)); err == nil && st.Mode().Perm() != 0o600 {
				t.Errorf("pi2's %s has mode %o", f, st.Mode().Perm())
			}
		}
		// Each server its own serving certificate.
		a, _ := os.ReadFile(filepath.Join(pi1.DataDir(), "server", "tls", "serving-kube-apiserver.crt"))
		b, _ := os.ReadFile(filepath.Join(pi2.DataDir(), "server", "tls", "serving-kube-apiserver.crt"))
		if string(a) == string(b) {
			t.Error("both servers have the same serving certificate")
		}
		nodes, err := cs2.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes.Items) != 3 {
			t.Errorf("pi2's apiserver sees %d nodes, want 3", len(nodes.Items))
		}
		for _, n := range nodes.Items {
			if !cluster.NodeReady(&n) {
				t.Errorf("node %s not Ready", n.Name)
			}
		}
	})

	// The agent's load balancer learns pi2 from the cluster before pi1 goes.
	testutil.WaitFor(t, time.Minute, "pi3's load balancer to list pi2", func() bool {
		return strings.Contains(pi3.LogTail(1<<20), pi2.IP()+":6443")
	})

	// The leases are pi1's: it started first, and nothing took them since.
	holders := leaseHolders(t, ctx, cs1)
	for _, l := range haLeases {
		if holders[l] == "" {
			t.Fatalf("lease %s has no holder", l)
		}
	}
	if !strings.HasPrefix(holders["bramble-controllers"], "pi1_") {
		t.Fatalf("bramble-controllers is held by %q, want pi1", holders["bramble-controllers"])
	}
	t.Logf("lease holders before the kill: %v", holders)

	// Writes through pi1 until it is killed: every acknowledged one must
	// be there afterwards.
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
		// The bound: another server takes over within 30 s.
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
				if !strings.HasPrefix(now["bramble-controllers"], "pi2_") {
					t.Errorf("bramble-controllers went to %q, want pi2", now["bramble-controllers"])
				}
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
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					// pi2: the surviving server's own node (the agent's
					// failover is AgentFailsOver).
					Spec: sleepSpec("pi2"),
				},
			},
		}
		if _, err := cs2.AppsV1().Deployments("ha").Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 2*time.Minute, "the new Deployment's pod Running on pi2", func() bool {
			pods, err := cs2.CoreV1().Pods("ha").List(ctx, metav1.ListOptions{LabelSelector: "app=after-failover"})
			if err != nil {
				return false
			}
			for _, p := range pods.Items {
				if p.Spec.NodeName == "pi2" && p.Status.Phase == corev1.PodRunning {
					return true
				}
			}
			return false
		})
		t.Logf("Deployment created through pi2 Running %.1f s later (%.1f s after the kill)", time.Since(created).Seconds(), time.Since(killed).Seconds())
	})

	t.Run("AgentFailsOver", func(t *testing.T) {
		// The agent joined pi1; its kubelet now renews its lease and runs
		// a new pod through pi2.
		testutil.WaitFor(t, time.Minute, "pi3's kubelet to renew its lease after the kill", func() bool {
			l, err := cs2.CoordinationV1().Leases("kube-node-lease").Get(ctx, "pi3", metav1.GetOptions{})
			return err == nil && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(killed.Add(3*time.Second))
		})
		if kn, err := cs2.CoreV1().Nodes().Get(ctx, "pi3", metav1.GetOptions{}); err != nil || !cluster.NodeReady(kn) {
			t.Errorf("pi3 not Ready after the kill (%v)", err)
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "on-agent", Namespace: "ha"},
			Spec:       sleepSpec("pi3"),
		}
		if _, err := cs2.CoreV1().Pods("ha").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 2*time.Minute, "a new pod Running on the agent", func() bool {
			p, err := cs2.CoreV1().Pods("ha").Get(ctx, "on-agent", metav1.GetOptions{})
			return err == nil && p.Status.Phase == corev1.PodRunning
		})
		t.Logf("pod on the agent Running %.1f s after the kill", time.Since(killed).Seconds())
	})

	for _, n := range []*cluster.Node{pi1, pi2} {
		if strings.Contains(n.LogTail(1<<30), pg.Password) {
			t.Errorf("%s logged the datastore password", n.Host)
		}
	}
}

// sleepSpec is a pod that sleeps on node (busybox, imported on every node).
func sleepSpec(node string) corev1.PodSpec {
	return corev1.PodSpec{
		NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
		TerminationGracePeriodSeconds: new(int64),
		Containers:                    []corev1.Container{{Name: "sleep", Image: busybox, ImagePullPolicy: corev1.PullNever, Command: []string{"sleep", "3600"}}},
	}
}

// serverClient is an admin client talking to the apiserver of server n.
func serverClient(t *testing.T, c *cluster.Cluster, n *cluster.Node) *kubernetes.Clientset {
	t.Helper()
	cfg, err := c.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Host = fmt.Sprintf("https://%s:%d", n.IP(), cluster.APIPort)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// leaseHolders are the holders of haLeases in kube-system.
func leaseHolders(t *testing.T, ctx context.Context, cs kubernetes.Interface) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range haLeases {
		l, err := cs.CoordinationV1().Leases(metav1.NamespaceSystem).Get(ctx, name, metav1.GetOptions{})
		if err == nil && l.Spec.HolderIdentity != nil {
			out[name] = *l.Spec.HolderIdentity
		}
	}
	return out
}

// tree lists a directory's files with their sizes and modes.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		lines = append(lines, fmt.Sprintf("%s %o %d", rel, info.Mode(), info.Size()))
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}
