// Package node tests `bramble server` with its node for real: containerd,
// runc, kubelet, flannel and kube-proxy on this machine, pods from the
// busybox test image, and the killall script afterwards.
package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/pkg/hostcheck"
	"github.com/bramble-pi/bramble/tests/testutil"
)

const busybox = "docker.io/bramble/busybox:test"

func TestSingleNode(t *testing.T) {
	testutil.RequireRoot(t)
	// Pass-through flags reach kube-proxy and containerd (checked below).
	// Two damaged archives beside the good one (a copy cut short, a file
	// of garbage): each is reported by name, the node starts, and busybox
	// from the good archive runs (below).
	damaged := func(s *testutil.Server) {
		dir := filepath.Join(s.DataDir, "agent", "images")
		good, err := os.ReadFile(filepath.Join(dir, "busybox.tar"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cut-short.tar"), good[:len(good)/2], 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "garbage.tar.zst"), bytes.Repeat([]byte("not zstd "), 4096), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, node := startNodeWith(t, damaged, "--kube-proxy-arg=healthz-bind-address=127.0.0.1:10266", "--containerd-arg=log-level=info")
	t.Logf("node %s Ready", node)
	for _, f := range []string{"cut-short.tar", "garbage.tar.zst"} {
		line := grepLine(s.Log.String(), f)
		if !strings.Contains(line, "level=ERROR") && !strings.Contains(line, "level=WARN") || !strings.Contains(line, "damaged") {
			t.Errorf("the damaged image archive %s is not reported as one:\n%s", f, line)
		} else {
			t.Logf("damaged archive reported: %s", line)
		}
	}
	checkHardening(t, s, node)
	testutil.WaitFor(t, time.Minute, "kube-proxy's health check on the passed address", func() bool {
		return strings.Contains(httpGet("http://127.0.0.1:10266/healthz"), "lastUpdated")
	})
	if body := httpGet("http://127.0.0.1:10256/healthz"); strings.Contains(body, "lastUpdated") {
		t.Error("kube-proxy also serves its health check on bramble's default address")
	}
	if log, _ := os.ReadFile(filepath.Join(s.DataDir, "agent", "containerd", "containerd.log")); !strings.Contains(string(log), "level=info") {
		t.Error("containerd logs no info lines with --containerd-arg=log-level=info")
	}

	s.MustKubectl("create", "namespace", "e2e")
	// The node can be Ready before kube-controller-manager's service account
	// controller has run (pod CIDRs no longer wait for it): a pod in a new
	// namespace needs its default service account, as on any cluster.
	testutil.WaitServiceAccount(t, s, "e2e")
	s.MustKubectl("-n", "e2e", "run", "web", "--image="+busybox, "--image-pull-policy=Never", "--labels=app=web", "--port=8080",
		"--command", "--", "sh", "-c", "mkdir -p /www && echo hello-from-bramble > /www/index.html && echo serving && exec httpd -f -v -p 8080 -h /www")
	testutil.WaitFor(t, 2*time.Minute, "pod web Running", func() bool {
		out, _ := s.Kubectl("-n", "e2e", "get", "pod", "web", "-o", "jsonpath={.status.phase}")
		return out == "Running"
	})
	podIP := s.MustKubectl("-n", "e2e", "get", "pod", "web", "-o", "jsonpath={.status.podIP}")
	if !strings.HasPrefix(podIP, "10.42.") {
		t.Fatalf("pod IP %q is not in 10.42.0.0/16", podIP)
	}
	s.MustKubectl("-n", "e2e", "expose", "pod", "web", "--port=80", "--target-port=8080", "--name=web")
	clusterIP := s.MustKubectl("-n", "e2e", "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
	if !strings.HasPrefix(clusterIP, "10.43.") {
		t.Fatalf("cluster IP %q is not in 10.43.0.0/16", clusterIP)
	}
	// Until kube-proxy programs the Service, a packet to its IP would follow
	// the default route off the machine: wait for the rule first.
	testutil.WaitFor(t, 60*time.Second, "kube-proxy rule for the service", func() bool {
		out, _ := exec.Command("iptables-save", "-t", "nat").Output()
		return strings.Contains(string(out), "-d "+clusterIP+"/32")
	})
	var body string
	testutil.WaitFor(t, 60*time.Second, "service answers through kube-proxy", func() bool {
		body = httpGet("http://" + clusterIP + "/")
		if !strings.Contains(body, "hello-from-bramble") {
			t.Logf("GET http://%s/: %.200s", clusterIP, body)
			return false
		}
		return true
	})
	if out := s.MustKubectl("-n", "e2e", "logs", "web"); !strings.Contains(out, "serving") {
		t.Errorf("kubectl logs: %q", out)
	}
	if out := s.MustKubectl("-n", "e2e", "exec", "web", "--", "cat", "/www/index.html"); out != "hello-from-bramble" {
		t.Errorf("kubectl exec: %q", out)
	}
	containerID := s.MustKubectl("-n", "e2e", "get", "pod", "web", "-o", "jsonpath={.status.containerStatuses[0].containerID}")
	short := strings.TrimPrefix(containerID, "containerd://")
	for _, tool := range [][]string{{"crictl", "ps", "-q"}, {"ctr", "containers", "ls", "-q"}} {
		cmd := exec.Command(testutil.Binary(t), tool...)
		cmd.Env = append(os.Environ(), "BRAMBLE_DATA_DIR="+s.DataDir)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), short) {
			t.Errorf("bramble %s: %v: %s does not list %s", strings.Join(tool, " "), err, out, short)
		}
	}

	// Restart bramble: the pod's container keeps running, untouched.
	s.Stop(15 * time.Second)
	if !strings.Contains(httpGet("http://"+podIP+":8080/"), "hello-from-bramble") {
		t.Error("pod stopped answering while bramble was down")
	}
	s.Start()
	s.WaitReady(3 * time.Minute)
	waitNodeReady(t, s, 3*time.Minute)
	testutil.WaitFor(t, 60*time.Second, "pod web Ready again", func() bool {
		out, _ := s.Kubectl("-n", "e2e", "get", "pod", "web", "-o", "jsonpath={.status.containerStatuses[0].ready}")
		return out == "true"
	})
	if got := s.MustKubectl("-n", "e2e", "get", "pod", "web", "-o", "jsonpath={.status.containerStatuses[0].containerID}"); got != containerID {
		t.Errorf("container changed across a bramble restart: %s -> %s", containerID, got)
	}
	if rc := s.MustKubectl("-n", "e2e", "get", "pod", "web", "-o", "jsonpath={.status.containerStatuses[0].restartCount}"); rc != "0" {
		t.Errorf("restartCount %s, want 0", rc)
	}
	s.Stop(15 * time.Second)

	testutil.Killall(t, s.DataDir)
	assertClean(t, s.DataDir)
}

// startNode starts a server with its node (args added to its flags), the
// busybox test image in agent/images, and waits until the node is Ready.
func startNode(t *testing.T, args ...string) (*testutil.Server, string) {
	t.Helper()
	return startNodeWith(t, nil, args...)
}

// startNodeWith is startNode with prepare run on the server before it
// starts (its images dir holds busybox.tar).
func startNodeWith(t *testing.T, prepare func(*testutil.Server), args ...string) (*testutil.Server, string) {
	t.Helper()
	image := filepath.Join(testutil.RepoRoot(t), "dist", "images", testutil.Arch(), "busybox.tar")
	if _, err := os.Stat(image); err != nil {
		t.Fatalf("busybox test image missing (make test-images builds it): %v", err)
	}
	s := testutil.NewServer(t, args...)
	testutil.CleanupNode(t, s)
	imagesDir := filepath.Join(s.DataDir, "agent", "images")
	if err := os.MkdirAll(imagesDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(image, filepath.Join(imagesDir, "busybox.tar")); err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(s)
	}
	s.Start()
	s.WaitReady(3 * time.Minute)
	return s, waitNodeReady(t, s, 3*time.Minute)
}

// A pod asking for the runtime/default AppArmor profile runs confined by
// containerd's profile, where the host has AppArmor (Debian 12, Raspberry
// Pi OS with AppArmor on); elsewhere (this CI VM's kernel) the test is
// skipped with the reason, as the arch-specific tests are: the host cannot
// run it, and TestSingleNode checks that AppArmor is off there, logged.
func TestAppArmorRuntimeDefault(t *testing.T) {
	testutil.RequireRoot(t)
	facts, err := hostcheck.Detect()
	if err != nil {
		t.Fatal(err)
	}
	if ok, why := facts.AppArmor(); !ok {
		t.Skip("no AppArmor for containers on this host: " + why)
	}
	s, _ := startNode(t)
	if strings.Contains(s.Log.String(), "AppArmor off") {
		t.Error("AppArmor logged as off on a host that has it")
	}
	testutil.WaitServiceAccount(t, s, "default")
	s.MustKubectl("run", "confined", "--image="+busybox, "--image-pull-policy=Never",
		`--overrides={"spec":{"securityContext":{"appArmorProfile":{"type":"RuntimeDefault"}}}}`, "--command", "--", "sleep", "3600")
	testutil.WaitFor(t, 2*time.Minute, "pod confined Running", func() bool {
		out, _ := s.Kubectl("get", "pod", "confined", "-o", "jsonpath={.status.phase}")
		return out == "Running"
	})
	if out := s.MustKubectl("exec", "confined", "--", "cat", "/proc/1/attr/current"); !strings.Contains(out, "cri-containerd.apparmor.d (enforce)") {
		t.Errorf("the container's AppArmor profile is %q, want containerd's runtime/default (cri-containerd.apparmor.d, enforce)", out)
	}
	s.Stop(15 * time.Second)
}

// checkHardening checks the node's defaults: the TLS policy on the
// apiserver's and the kubelet's ports, the kubelet's streaming timeout and
// protectKernelDefaults (on where bramble could set the kernel parameters,
// else the log says why), AppArmor off with a reason on a host without it.
func checkHardening(t *testing.T, s *testutil.Server, node string) {
	t.Helper()
	testutil.CheckTLSPolicy(t, fmt.Sprintf("127.0.0.1:%d", s.Port))
	testutil.CheckTLSPolicy(t, "127.0.0.1:10250")
	var configz struct {
		KubeletConfig struct {
			ProtectKernelDefaults          bool     `json:"protectKernelDefaults"`
			StreamingConnectionIdleTimeout string   `json:"streamingConnectionIdleTimeout"`
			TLSCipherSuites                []string `json:"tlsCipherSuites"`
		} `json:"kubeletconfig"`
	}
	if err := json.Unmarshal([]byte(s.MustKubectl("get", "--raw", "/api/v1/nodes/"+node+"/proxy/configz")), &configz); err != nil {
		t.Fatal(err)
	}
	kc := configz.KubeletConfig
	if kc.StreamingConnectionIdleTimeout != "5m0s" || len(kc.TLSCipherSuites) == 0 {
		t.Errorf("kubelet: streamingConnectionIdleTimeout %q, tlsCipherSuites %q", kc.StreamingConnectionIdleTimeout, kc.TLSCipherSuites)
	}
	t.Logf("kubelet: protectKernelDefaults %v, streamingConnectionIdleTimeout %s, %d TLS 1.2 suites", kc.ProtectKernelDefaults, kc.StreamingConnectionIdleTimeout, len(kc.TLSCipherSuites))
	why := strings.Contains(s.Log.String(), "kubelet runs without protectKernelDefaults")
	if kc.ProtectKernelDefaults == why {
		t.Errorf("protectKernelDefaults %v, and the log explains it off: %v", kc.ProtectKernelDefaults, why)
	}
	facts, err := hostcheck.Detect()
	if err != nil {
		t.Fatal(err)
	}
	apparmor, _ := facts.AppArmor()
	config, err := os.ReadFile(filepath.Join(s.DataDir, "agent", "etc", "containerd", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(config), fmt.Sprintf("disable_apparmor = %v", !apparmor)) {
		t.Errorf("host AppArmor %v, containerd config:\n%s", apparmor, config)
	}
	if logged := strings.Contains(s.Log.String(), "AppArmor off for containers"); logged == apparmor {
		t.Errorf("host AppArmor %v, logged as off %v", apparmor, logged)
	}
}

func waitNodeReady(t *testing.T, s *testutil.Server, timeout time.Duration) string {
	t.Helper()
	var name string
	testutil.WaitFor(t, timeout, "node Ready", func() bool {
		out, _ := s.Kubectl("get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		n, status, ok := strings.Cut(strings.TrimSpace(out), "=")
		name = n
		return ok && status == "True"
	})
	return name
}

// assertClean checks nothing of the node is left on the machine.
func assertClean(t *testing.T, dataDir string) {
	t.Helper()
	if pids := testutil.ProcessesUsing(dataDir); len(pids) > 0 {
		t.Errorf("processes left: %v", pids)
	}
	if pids := testutil.ProcessesUsing("/run/bramble"); len(pids) > 0 {
		t.Errorf("processes left using /run/bramble: %v", pids)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, dataDir) || strings.Contains(line, "/run/bramble") || strings.Contains(line, "/var/lib/kubelet/pods") {
			t.Errorf("mount left: %s", line)
		}
	}
	for _, link := range []string{"cni0", "flannel.1"} {
		if err := exec.Command("ip", "link", "show", link).Run(); err == nil {
			t.Errorf("interface %s left", link)
		}
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), "cni-") {
		t.Errorf("pod network namespaces left: %s", out)
	}
	for _, table := range []string{"filter", "nat", "mangle"} {
		out, _ := exec.Command("iptables-save", "-t", table).Output()
		for _, line := range strings.Split(string(out), "\n") {
			for _, p := range []string{"KUBE-", "FLANNEL-", "CNI-"} {
				if strings.HasPrefix(line, ":"+p) || strings.HasPrefix(line, "-A "+p) {
					t.Errorf("iptables %s: left %s", table, line)
				}
			}
		}
	}
}

func httpGet(url string) string {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("%s %v %s", resp.Status, resp.Header, b)
	}
	return string(b)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// grepLine returns the first line of log that contains s ("" if none).
func grepLine(log, s string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}
