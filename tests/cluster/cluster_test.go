package cluster_test

// TestCluster builds one three-node bramble (server pi1, agents pi2 and pi3)
// on this machine with the cluster harness and runs every multi-node check
// on it: readiness, spreading, the ingress on every node, pod-to-pod over
// vxlan, NetworkPolicies enforced across nodes, the WireGuard backend
// refused on a kernel without it, an image imported on the server pulled by the agents through the
// server's registry, refused joins, an agent stopped and started again, and
// a server restart under running agents, and the server's data restored
// from a snapshot onto a wiped server node. At the end the cluster is removed and the
// test asserts nothing of it is left.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bramble-pi/bramble/tests/cluster"
	"github.com/bramble-pi/bramble/tests/testutil"
)

// -nodes=1 runs the checks that need no agent on a one-node cluster (for
// working on the harness itself).
var nodeCount = flag.Int("nodes", 3, "nodes in the test cluster (the agent checks need 3)")

const (
	busybox   = "docker.io/bramble/busybox:test"
	plumberNS = "plumber"
	plumberLB = "app.kubernetes.io/name=plumber-api"
)

type env struct {
	t          *testing.T
	c          *cluster.Cluster
	cs         *kubernetes.Clientset
	firstCerts map[string]string // node -> serial of its first kubelet client certificate
}

func TestCluster(t *testing.T) {
	testutil.RequireRoot(t)
	root := testutil.RepoRoot(t)
	images := []string{
		filepath.Join(root, "dist", "bramble-airgap-images-"+testutil.Arch()+".tar.zst"),
		filepath.Join(root, "dist", "images", testutil.Arch(), "busybox.tar"),
	}
	for _, f := range images {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s missing (make airgap test-images builds it): %v", f, err)
		}
	}
	stateDir := filepath.Join(t.TempDir(), "cluster")
	c, err := cluster.New(cluster.Config{
		Name: "brtest", StateDir: stateDir,
		Binary: testutil.Binary(t), Killall: filepath.Join(root, "scripts", "bramble-killall.sh"),
		Images: images, Logf: t.Logf,
		// Node certificates of a few minutes: every check below runs while
		// they are renewed underneath (what a year does, in minutes).
		ServerArgs: []string{"--node-cert-validity=" + nodeCertValidity.String()},
	})
	if err != nil {
		t.Fatal(err)
	}
	// A cluster of this name left by a crashed run goes first.
	if err := c.Down(); err != nil {
		t.Fatalf("removing an earlier test cluster: %v", err)
	}
	kernelBefore := kernelSettings()
	t.Cleanup(func() {
		if t.Failed() {
			keep := filepath.Join(os.TempDir(), fmt.Sprintf("bramble-cluster-test-logs-%d", time.Now().Unix()))
			for _, n := range c.Nodes() {
				t.Logf("==== %s bramble log (last 3000 bytes):\n%s", n.Host, n.LogTail(3000))
				if b, err := os.ReadFile(n.LogFile()); err == nil && os.MkdirAll(keep, 0o700) == nil {
					_ = os.WriteFile(filepath.Join(keep, n.Host+".log"), b, 0o600)
				}
			}
			t.Logf("node logs kept in %s", keep)
		}
		begin := time.Now()
		if err := c.Down(); err != nil {
			t.Errorf("cluster down: %v", err)
		}
		t.Logf("cluster down in %.1f s", time.Since(begin).Seconds())
		for _, l := range cluster.Leftovers(c.Name(), stateDir) {
			t.Errorf("left after down: %s", l)
		}
		if pids := testutil.ProcessesUsing(stateDir); len(pids) > 0 {
			t.Errorf("processes left using %s: %v", stateDir, pids)
		}
		if got := kernelSettings(); got != kernelBefore {
			t.Errorf("kernel settings not restored: %s, were %s", got, kernelBefore)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	begin := time.Now()
	tm, err := c.Up(ctx, *nodeCount)
	if err != nil {
		t.Fatalf("cluster up: %v", err)
	}
	t.Logf("cluster of %d up in %.1f s (server API %.1f s, server node Ready %.1f s, agents Ready %.1f s)",
		*nodeCount, time.Since(begin).Seconds(), tm.ServerAPI.Seconds(), tm.ServerReady.Seconds(), tm.AgentsReady.Seconds())
	cs, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, c: c, cs: cs, firstCerts: e0certs(t, c)}

	t.Run("NodesReady", e.nodesReady)
	t.Run("IngressOnEveryNode", e.ingressOnEveryNode)
	for _, check := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"PlumberSpread", e.plumberSpread},
		{"PodToPodAcrossNodes", e.podToPod},
		{"NetworkPolicy", e.networkPolicy},
		{"LocalStorageOnAgent", e.localStorageOnAgent},
		{"LoadBalancerOnEveryNode", e.loadBalancerOnEveryNode},
		{"TopNodes", e.topNodes},
		{"ImagesImportReachesAgents", e.imagesImport},
		{"RegistryOnlyForNodes", e.registryAccess},
		{"JoinRefused", e.joinRefused},
		{"BareSecretJoinAndNameFreedByDelete", e.bareSecretJoin},
		{"AgentStopAndRejoin", e.agentStopAndRejoin},
		{"ServerRestartKeepsAgentPods", e.serverRestart},
		{"ForgedNameRefused", e.forgedNameRefused},
		{"JoinSendsNoPrivateKey", e.joinSendsNoPrivateKey},
		{"FlannelOwnNodeOnly", e.flannelOwnNodeOnly},
		{"NameKeptAfterDeleteNode", e.nameKeptAfterDeleteNode},
		{"NodeCertificatesRenewed", e.nodeCertificatesRenewed},
		{"WireGuardNeedsKernel", e.wireGuardNeedsKernel},
		{"RestoreOnFreshServer", e.restoreOnFreshServer},
	} {
		t.Run(check.name, func(t *testing.T) {
			if *nodeCount < 3 {
				t.Skipf("-nodes=%d: this check needs the two agents of a 3-node cluster", *nodeCount)
			}
			check.run(t)
		})
	}
}

func kernelSettings() string {
	var out []string
	for _, f := range []string{"/proc/sys/kernel/panic", "/proc/sys/kernel/panic_on_oops", "/proc/sys/vm/overcommit_memory"} {
		b, _ := os.ReadFile(f)
		out = append(out, filepath.Base(f)+"="+strings.TrimSpace(string(b)))
	}
	return strings.Join(out, " ")
}

func (e *env) node(host string) *cluster.Node {
	n, err := e.c.Node(host)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	e.t.Cleanup(cancel)
	return ctx
}

// kubectl runs kubectl from the switch namespace; stdin optional.
func (e *env) kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := e.c.KubectlCmd(e.ctx(2*time.Minute), args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func (e *env) nodesReady(t *testing.T) {
	nodes, err := e.cs.CoreV1().Nodes().List(e.ctx(time.Minute), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != *nodeCount {
		t.Errorf("%d nodes, want %d", len(nodes.Items), *nodeCount)
	}
	for _, kn := range nodes.Items {
		n := e.node(kn.Name)
		if !cluster.NodeReady(&kn) {
			t.Errorf("node %s not Ready", kn.Name)
		}
		var ip string
		for _, a := range kn.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = a.Address
			}
		}
		if ip != n.IP() {
			t.Errorf("node %s InternalIP %q, want %s", kn.Name, ip, n.IP())
		}
		if kn.Spec.PodCIDR == "" {
			t.Errorf("node %s has no pod CIDR", kn.Name)
		}
		t.Logf("node %s Ready, %s, pod CIDR %s", kn.Name, ip, kn.Spec.PodCIDR)
	}
}

// ingressOnEveryNode: Traefik's hostPort 80 answers on every node's IP.
func (e *env) ingressOnEveryNode(t *testing.T) {
	for _, n := range e.c.Nodes() {
		url := "http://" + n.IP() + "/parity?int=15"
		begin := time.Now()
		testutil.WaitFor(t, 4*time.Minute, "odd from "+url, func() bool {
			code, body := e.c.Get(url)
			return code == 200 && strings.TrimSpace(body) == "odd"
		})
		t.Logf("%s -> odd (waited %.1f s)", url, time.Since(begin).Seconds())
	}
}

// plumberPods lists the Plumber API's pods by node, ready ones only.
func (e *env) plumberPods(t *testing.T) map[string][]string {
	pods, err := e.cs.CoreV1().Pods(plumberNS).List(e.ctx(time.Minute), metav1.ListOptions{LabelSelector: plumberLB})
	if err != nil {
		t.Fatal(err)
	}
	byNode := map[string][]string{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && podReady(&p) {
			byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p.Name)
		}
	}
	return byNode
}

// podsOn lists the pods matching selector on a node, ready or not.
func (e *env) podsOn(t *testing.T, ns, selector, node string) []string {
	pods, err := e.cs.CoreV1().Pods(ns).List(e.ctx(time.Minute), metav1.ListOptions{LabelSelector: selector, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	return names
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (e *env) waitPlumber(t *testing.T, what string, ok func(map[string][]string) bool) map[string][]string {
	t.Helper()
	var byNode map[string][]string
	testutil.WaitFor(t, 4*time.Minute, what, func() bool {
		byNode = e.plumberPods(t)
		total := 0
		for _, ps := range byNode {
			total += len(ps)
		}
		return total == 3 && ok(byNode)
	})
	return byNode
}

// plumberSpread: the replicas spread over the three nodes. They were
// scheduled when only the server was Ready, and a ScheduleAnyway spread
// constraint never moves running pods, so (as an operator would) roll the
// Deployment once the agents are in.
func (e *env) plumberSpread(t *testing.T) {
	before := e.plumberPods(t)
	t.Logf("Plumber pods before the rollout: %v", before)
	e.kubectl(t, "", "-n", plumberNS, "rollout", "restart", "deployment/plumber-api")
	e.kubectl(t, "", "-n", plumberNS, "rollout", "status", "deployment/plumber-api", "--timeout=4m")
	byNode := e.waitPlumber(t, "3 Plumber replicas ready", func(m map[string][]string) bool { return true })
	if len(byNode) != 3 {
		t.Errorf("Plumber replicas on %d nodes, want 3: %v", len(byNode), byNode)
	}
	t.Logf("Plumber pods after the rollout: %v", byNode)
}

// podToPod: a pod on pi3 reaches a pod on pi2 over flannel's vxlan.
func (e *env) podToPod(t *testing.T) {
	manifest := `apiVersion: v1
kind: Namespace
metadata: {name: e2e}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: e2e, labels: {app: web}}
spec:
  nodeSelector: {kubernetes.io/hostname: pi2}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: ` + busybox + `
    imagePullPolicy: Never
    command: [sh, -c, "mkdir -p /www && echo hello-from-pi2 > /www/index.html && exec httpd -f -p 8080 -h /www"]
` + sleepPod("client", "pi3")
	e.kubectl(t, manifest, "apply", "-f", "-")
	e.kubectl(t, "", "-n", "e2e", "wait", "--for=condition=Ready", "pod/web", "pod/client", "--timeout=2m")
	web, err := e.cs.CoreV1().Pods("e2e").Get(e.ctx(time.Minute), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	client, err := e.cs.CoreV1().Pods("e2e").Get(e.ctx(time.Minute), "client", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if web.Spec.NodeName != "pi2" || client.Spec.NodeName != "pi3" {
		t.Fatalf("web on %s, client on %s: want pi2, pi3", web.Spec.NodeName, client.Spec.NodeName)
	}
	t.Logf("web %s on pi2, client %s on pi3", web.Status.PodIP, client.Status.PodIP)
	if out := e.kubectl(t, "", "-n", "e2e", "exec", "client", "--", "wget", "-qO-", "http://"+web.Status.PodIP+":8080/"); out != "hello-from-pi2" {
		t.Errorf("wget from pi3 to pi2's pod: %q", out)
	}
	if out := e.kubectl(t, "", "-n", "e2e", "exec", "client", "--", "ping", "-c", "2", "-W", "3", web.Status.PodIP); !strings.Contains(out, "2 packets received") {
		t.Errorf("ping from pi3 to pi2's pod:\n%s", out)
	}
}

// serverSnapshot is what a refused join must not change.
func (e *env) serverSnapshot(t *testing.T) string {
	t.Helper()
	ctx := e.ctx(time.Minute)
	var lines []string
	nodes, err := e.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		lines = append(lines, fmt.Sprintf("node %s uid=%s labels=%v taints=%v", n.Name, n.UID, n.Labels, n.Spec.Taints))
	}
	secrets, err := e.cs.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		lines = append(lines, fmt.Sprintf("secret kube-system/%s rv=%s", s.Name, s.ResourceVersion))
	}
	csrs, err := e.cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range csrs.Items {
		lines = append(lines, "csr "+c.Name)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// refusedJoin runs bramble agent on the spare machine with token and node
// name, expects it to exit non-zero within a minute, and returns its output.
func (e *env) refusedJoin(t *testing.T, spare *cluster.Node, token, nodeName, dataDir string) string {
	t.Helper()
	server := e.node("pi1")
	args := []string{"agent", "--server", fmt.Sprintf("https://%s:%d", server.IP(), cluster.APIPort),
		"--data-dir", dataDir, "--node-name", nodeName, "--node-ip", spare.IP(), "--kubelet-arg=cgroup-root=" + spare.Cgroup}
	return e.refusedStart(t, spare, args, []string{"BRAMBLE_TOKEN=" + token}, "agent with a bad join (node "+nodeName+")")
}

// refusedStart starts bramble on n with args and env, expects it to exit
// non-zero within a minute, and returns what it logged.
func (e *env) refusedStart(t *testing.T, n *cluster.Node, args, env []string, what string) string {
	t.Helper()
	before, _ := os.ReadFile(n.LogFile())
	r, err := e.c.Start(n, args, env)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.Done():
	case <-time.After(time.Minute):
		_, _ = e.c.Stop(n, 10*time.Second)
		<-r.Done()
		t.Fatalf("%s still runs after a minute", what)
	}
	all, _ := os.ReadFile(n.LogFile())
	out := string(all[len(before):])
	if r.ExitCode() == 0 {
		t.Errorf("%s exited 0:\n%s", what, out)
	}
	return out
}

// joinRefused: bad tokens and a stolen node name are refused with a clear
// error, and the server is left as it was.
func (e *env) joinRefused(t *testing.T) {
	spare, err := e.c.AddNode(cluster.NodeOptions{Host: "pi4", Index: 4, Role: cluster.RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	token, err := e.c.Token()
	if err != nil {
		t.Fatal(err)
	}
	caHash, secret, ok := strings.Cut(strings.TrimPrefix(token, "K10"), "::server:")
	if !ok || len(caHash) != 64 {
		t.Fatalf("server token is not K10<sha256>::server:<secret>: %d chars", len(token))
	}
	// The expired bootstrap token comes first: creating it changes the
	// server, the join must not.
	server := e.node("pi1")
	create := e.c.InNode(server, testutil.Binary(t), "token", "create", "--ttl", "1s", "--data-dir", server.DataDir())
	out, err := create.CombinedOutput()
	if err != nil {
		t.Fatalf("bramble token create: %v\n%s", err, out)
	}
	bootstrap := lastLine(string(out))
	time.Sleep(2 * time.Second)
	snapshot := e.serverSnapshot(t)

	otherHash := sha256.Sum256([]byte("not this cluster's CA"))
	cases := []struct {
		name, token, nodeName, want string
	}{
		{"WrongSecret", "K10" + caHash + "::server:" + strings.Repeat("0", len(secret)), "pi4", "token was rejected"},
		{"WrongCAHash", "K10" + hex.EncodeToString(otherHash[:]) + "::server:" + secret, "pi4", "CA hash mismatch"},
		{"ExpiredBootstrapToken", bootstrap, "pi4", "expired"},
		{"NodeNameOfAnotherMachine", token, "pi2", "already registered by another machine"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A fresh data dir each time: a new machine, with a node password of its own.
			out := e.refusedJoin(t, spare, tc.token, tc.nodeName, filepath.Join(spare.Dir, fmt.Sprintf("data-%d", i)))
			if !strings.Contains(out, tc.want) {
				t.Errorf("error does not say %q:\n%s", tc.want, out)
			} else {
				t.Logf("refused: %s", lastLine(out))
			}
			if strings.Contains(out, secret) {
				t.Errorf("the agent logged the token's secret")
			}
			if got := e.serverSnapshot(t); got != snapshot {
				t.Errorf("the server changed:\nbefore:\n%s\nafter:\n%s", snapshot, got)
			}
		})
	}
	if err := e.c.WaitReady(e.ctx(time.Minute), true, e.node("pi2")); err != nil {
		t.Errorf("pi2 after another machine tried its name: %v", err)
	}
	id, _, _ := strings.Cut(strings.TrimPrefix(bootstrap, "K10"), ".")
	if i := strings.LastIndex(id, "::"); i >= 0 {
		id = id[i+2:]
	}
	list := e.c.InNode(server, testutil.Binary(t), "token", "list", "--data-dir", server.DataDir())
	if out, err := list.CombinedOutput(); err != nil {
		t.Errorf("bramble token list: %v\n%s", err, out)
	} else {
		t.Logf("bramble token list:\n%s", out)
	}
	if id != "" {
		del := e.c.InNode(server, testutil.Binary(t), "token", "delete", "--data-dir", server.DataDir(), id)
		if out, err := del.CombinedOutput(); err != nil {
			t.Errorf("bramble token delete %s: %v\n%s", id, err, out)
		}
	}
}

// bareSecretJoin: the spare machine joins with the bare secret (no CA hash:
// it works, with a warning) and labels and a taint of its own; `kubectl
// delete node` then frees the name, and another machine (pi5: new namespaces
// and data dir, so a new node password) joins under it. (The refusals before
// used data dirs of their own: pi4's own data dir is fresh here.)
func (e *env) bareSecretJoin(t *testing.T) {
	spare := e.node("pi4")
	token, err := e.c.Token()
	if err != nil {
		t.Fatal(err)
	}
	_, secret, _ := strings.Cut(token, "::server:")
	join := func(n *cluster.Node, tok string, extra ...string) {
		t.Helper()
		if _, err := e.c.StartAgent(n, tok, extra...); err != nil {
			t.Fatal(err)
		}
		if err := e.c.WaitReady(e.ctx(2*time.Minute), true, n); err != nil {
			t.Fatalf("%s (node pi4) did not become Ready: %v\n%s", n.Host, err, n.LogTail(3000))
		}
	}
	leave := func(n *cluster.Node) {
		t.Helper()
		if _, err := e.c.Stop(n, 30*time.Second); err != nil {
			t.Error(err)
		}
		if err := e.cs.CoreV1().Nodes().Delete(e.ctx(time.Minute), "pi4", metav1.DeleteOptions{}); err != nil {
			t.Fatalf("kubectl delete node pi4: %v", err)
		}
		testutil.WaitFor(t, 2*time.Minute, "pi4's node password freed (30 s after the delete)", func() bool {
			_, err := e.cs.CoreV1().Secrets("kube-system").Get(e.ctx(time.Minute), "pi4.node-password.bramble", metav1.GetOptions{})
			return err != nil
		})
	}

	before, _ := os.ReadFile(spare.LogFile())
	join(spare, secret, "--node-label", "bramble.test/spare=yes", "--node-taint", "bramble.test/spare=yes:NoSchedule")
	all, _ := os.ReadFile(spare.LogFile())
	if !strings.Contains(string(all[len(before):]), "the token has no CA hash") {
		t.Error("joining with a bare secret logged no warning about the missing CA hash")
	}
	node, err := e.cs.CoreV1().Nodes().Get(e.ctx(time.Minute), "pi4", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if node.Labels["bramble.test/spare"] != "yes" {
		t.Errorf("pi4 labels %v lack bramble.test/spare=yes", node.Labels)
	}
	tainted := false
	for _, taint := range node.Spec.Taints {
		tainted = tainted || (taint.Key == "bramble.test/spare" && taint.Value == "yes" && taint.Effect == corev1.TaintEffectNoSchedule)
	}
	if !tainted {
		t.Errorf("pi4 taints %v lack bramble.test/spare=yes:NoSchedule", node.Spec.Taints)
	}
	leave(spare)
	other, err := e.c.AddNode(cluster.NodeOptions{Host: "pi5", Index: 5, NodeName: "pi4", Role: cluster.RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	join(other, token, "--node-taint", "bramble.test/spare=yes:NoSchedule")
	t.Log("another machine (pi5) joined as pi4 after `kubectl delete node pi4`")
	leave(other)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// loadLoop sends GET /parity?int=3 to url until stopped and counts the
// failures.
type loadLoop struct {
	sent, failed atomic.Int64
	stop         chan struct{}
	wg           sync.WaitGroup
	mu           sync.Mutex
	lastErr      string
}

func (e *env) startLoad(urls ...string) *loadLoop {
	l := &loadLoop{stop: make(chan struct{})}
	for _, u := range urls {
		l.wg.Add(1)
		go func(url string) {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
				l.sent.Add(1)
				if code, body := e.c.Get(url); code != 200 || strings.TrimSpace(body) != "odd" {
					l.failed.Add(1)
					l.mu.Lock()
					l.lastErr = fmt.Sprintf("%s: %d %.200s", url, code, body)
					l.mu.Unlock()
				}
			}
		}(u)
	}
	return l
}

func (l *loadLoop) end() (sent, failed int64, last string) {
	close(l.stop)
	l.wg.Wait()
	return l.sent.Load(), l.failed.Load(), l.lastErr
}

// agentStopAndRejoin: stop pi3's bramble like a Pi that went away; the
// node goes NotReady; the Plumber API tolerates an unreachable or not-ready
// node for 30 s (its manifest), then its replicas move to pi1 and pi2,
// while the ingress on those keeps answering; started again, pi3 rejoins and
// finishes the pods that moved away. Nobody cordons or deletes anything.
func (e *env) agentStopAndRejoin(t *testing.T) {
	pi3 := e.node("pi3")
	onPi3 := e.podsOn(t, plumberNS, plumberLB, "pi3")
	t.Logf("Plumber pods on pi3: %v", onPi3)
	if len(onPi3) == 0 {
		t.Error("no Plumber pod on pi3: nothing to move")
	}
	load := e.startLoad("http://10.250.0.1/parity?int=3", "http://10.250.0.2/parity?int=3")
	took, err := e.c.Stop(pi3, 30*time.Second)
	if err != nil {
		t.Error(err)
	}
	stopped := time.Now()
	t.Logf("pi3 stopped in %.1f s", took.Seconds())
	if err := e.c.WaitReady(e.ctx(3*time.Minute), false, pi3); err != nil {
		t.Fatal(err)
	}
	t.Logf("pi3 NotReady %.1f s after its bramble stopped", time.Since(stopped).Seconds())
	byNode := e.waitPlumber(t, "3 Plumber replicas ready on pi1 and pi2", func(m map[string][]string) bool {
		return len(m["pi3"]) == 0
	})
	t.Logf("Plumber pods %.1f s after pi3 stopped: %v", time.Since(stopped).Seconds(), byNode)
	sent, failed, last := load.end()
	t.Logf("ingress while pi3 was down: %d requests, %d failed (last failure: %s)", sent, failed, last)
	if failed > 0 {
		t.Errorf("%d of %d requests through the ingress on pi1/pi2 failed while pi3 was down", failed, sent)
	}

	if _, err := e.c.Restart(pi3); err != nil {
		t.Fatal(err)
	}
	if err := e.c.WaitReadySince(e.ctx(3*time.Minute), pi3.Started, pi3); err != nil {
		t.Fatal(err)
	}
	t.Logf("pi3 Ready again %.1f s after its bramble started", time.Since(pi3.Started).Seconds())
	testutil.WaitFor(t, 2*time.Minute, "the pods evicted from pi3 finished there", func() bool {
		return len(e.podsOn(t, plumberNS, plumberLB, "pi3")) == 0
	})
	testutil.WaitFor(t, 2*time.Minute, "odd from pi3 again", func() bool {
		code, body := e.c.Get("http://10.250.0.3/parity?int=15")
		return code == 200 && strings.TrimSpace(body) == "odd"
	})
}

// agentPods maps each pod on pi2 and pi3 to its containers' IDs and
// restart counts.
func (e *env) agentPods(t *testing.T) map[string]string {
	pods, err := e.cs.CoreV1().Pods("").List(e.ctx(time.Minute), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pods.Items {
		if p.Spec.NodeName != "pi2" && p.Spec.NodeName != "pi3" || p.DeletionTimestamp != nil {
			continue
		}
		var cs []string
		for _, c := range p.Status.ContainerStatuses {
			cs = append(cs, fmt.Sprintf("%s=%s restarts=%d ready=%v", c.Name, c.ContainerID, c.RestartCount, c.Ready))
		}
		sort.Strings(cs)
		out[p.Namespace+"/"+p.Name+" on "+p.Spec.NodeName+" uid "+string(p.UID)] = strings.Join(cs, ", ")
	}
	return out
}

// serverRestart: the server restarts while the agents run; no pod on the
// agents restarts, and the agents' ingress answers while the server is down.
func (e *env) serverRestart(t *testing.T) {
	before := e.readyAgentPods(t)
	t.Logf("%d pods on the agents", len(before))
	server := e.node("pi1")
	took, err := e.c.Stop(server, 30*time.Second)
	if err != nil {
		t.Error(err)
	}
	t.Logf("server stopped in %.1f s", took.Seconds())
	// Pods on the agents keep serving while the server is down.
	for _, ip := range []string{"10.250.0.2", "10.250.0.3"} {
		if code, body := e.c.Get("http://" + ip + "/parity?int=15"); code != 200 || strings.TrimSpace(body) != "odd" {
			t.Errorf("ingress on %s with the server down: %d %.200s", ip, code, body)
		}
	}
	time.Sleep(5 * time.Second)
	begin := time.Now()
	if _, err := e.c.Restart(server); err != nil {
		t.Fatal(err)
	}
	if err := e.c.WaitAPI(e.ctx(3 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := e.c.WaitReady(e.ctx(3*time.Minute), true, e.c.Nodes()[:3]...); err != nil {
		t.Fatal(err)
	}
	t.Logf("server API and all nodes Ready %.1f s after the server started again", time.Since(begin).Seconds())
	// The agents reconnect: their kubelets renew their node leases with the
	// new server.
	e.agentLeasesRenewed(t, e.node("pi1").Started)
	e.agentPodsKept(t, before, "the server restart")
}

// agentLeasesRenewed waits until pi2's and pi3's kubelets renewed their node
// leases after since (their node status is posted only every few minutes
// when nothing changes; the lease every 20 s).
func (e *env) agentLeasesRenewed(t *testing.T, since time.Time) {
	testutil.WaitFor(t, time.Minute, "pi2 and pi3 renew their leases with the server", func() bool {
		for _, name := range []string{"pi2", "pi3"} {
			l, err := e.cs.CoordinationV1().Leases("kube-node-lease").Get(e.ctx(10*time.Second), name, metav1.GetOptions{})
			if err != nil || l.Spec.RenewTime == nil || l.Spec.RenewTime.Time.Before(since) {
				return false
			}
		}
		return true
	})
}

// readyAgentPods waits until every pod on the agents is ready and returns
// them (agentPods).
func (e *env) readyAgentPods(t *testing.T) map[string]string {
	var pods map[string]string
	testutil.WaitFor(t, 2*time.Minute, "every pod on the agents ready", func() bool {
		pods = e.agentPods(t)
		for _, v := range pods {
			if strings.Contains(v, "ready=false") || v == "" {
				return false
			}
		}
		return len(pods) > 0
	})
	return pods
}

// agentPodsKept checks that the pods on the agents are those of before
// (readyAgentPods), with the same containers and restart counts, across
// what happened to the server. Each agent's kubelet first runs a new pod
// from the server: its pod watch is back and its sync loop has gone over its
// pods since, so a pod that was disturbed shows by now.
func (e *env) agentPodsKept(t *testing.T, before map[string]string, across string) {
	// The probes of an earlier check are replaced by new ones.
	before = maps.Clone(before)
	maps.DeleteFunc(before, func(k, _ string) bool { return strings.HasPrefix(k, "e2e/resync-") })
	e.resyncProbes(t)
	// A restored database holds the pods' status of the snapshot's time:
	// the kubelets post theirs again when they reconcile (every 10 s).
	var after map[string]string
	deadline := time.Now().Add(time.Minute)
	for {
		after = e.agentPods(t)
		for k := range after {
			if strings.HasPrefix(k, "e2e/resync-") {
				delete(after, k)
			}
		}
		if maps.Equal(after, before) || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("pod %s changed across %s:\n  before: %s\n  after:  %s", k, across, v, after[k])
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("new pod on an agent after %s: %s", across, k)
		}
	}
}

// sleepPod is a YAML document (with its leading ---): a busybox pod in e2e,
// name, on node, that sleeps.
func sleepPod(name, node string) string {
	return `---
apiVersion: v1
kind: Pod
metadata: {name: ` + name + `, namespace: e2e}
spec:
  nodeSelector: {kubernetes.io/hostname: ` + node + `}
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleep
    image: ` + busybox + `
    imagePullPolicy: Never
    command: [sleep, "3600"]
`
}

// resyncProbes runs a pod on each agent and waits until both are Ready.
func (e *env) resyncProbes(t *testing.T) {
	manifest := "apiVersion: v1\nkind: Namespace\nmetadata: {name: e2e}\n" + sleepPod("resync-pi2", "pi2") + sleepPod("resync-pi3", "pi3")
	// New pods each time: those of an earlier call go first.
	_, _ = e.c.Kubectl(e.ctx(time.Minute), "-n", "e2e", "delete", "pod", "resync-pi2", "resync-pi3", "--ignore-not-found", "--wait", "--timeout=1m")
	e.kubectl(t, manifest, "apply", "-f", "-")
	e.kubectl(t, "", "-n", "e2e", "wait", "--for=condition=Ready", "pod/resync-pi2", "pod/resync-pi3", "--timeout=2m")
}
