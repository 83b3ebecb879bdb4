package node

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

const volumeClaim = `apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: vol
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 64Mi
`

// volumePod runs a busybox command with the claim data mounted on /data.
func volumePod(name, command string) string {
	return `apiVersion: v1
kind: Pod
metadata:
  name: ` + name + `
  namespace: vol
spec:
  restartPolicy: Never
  securityContext:
    runAsUser: 1000
  containers:
  - name: c
    image: ` + busybox + `
    imagePullPolicy: Never
    command: ["sh", "-c", "` + command + `"]
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: data
`
}

// The in-process add-ons local-storage, servicelb and metrics-server on one
// node (the other bundled add-ons left out).
func TestLocalStorageAndServiceLB(t *testing.T) {
	testutil.RequireRoot(t)
	s, node := startNode(t, "--disable", "coredns,traefik,plumber-api")
	s.MustKubectl("create", "namespace", "vol")
	testutil.WaitServiceAccount(t, s, "vol")
	t.Run("local-storage", func(t *testing.T) { checkLocalStorage(t, s, node) })
	t.Run("servicelb", func(t *testing.T) { checkServiceLB(t, s, node) })
	t.Run("metrics-server", func(t *testing.T) { checkMetricsServer(t, s, node) })

	// Restarted with all three disabled: the StorageClass goes, the address
	// servicelb gave lb2 is taken back, metrics.k8s.io is no longer
	// registered (and nothing listens on its port).
	s.Stop(30 * time.Second)
	s.Args = append(s.Args, "--disable", "local-storage,servicelb,metrics-server")
	s.Start()
	s.WaitReady(3 * time.Minute)
	testutil.WaitFor(t, 2*time.Minute, "no StorageClass, no address on lb2, no metrics-server registration", func() bool {
		classes, err1 := s.Kubectl("get", "storageclass", "-o", "name")
		ips, err2 := s.Kubectl("-n", "vol", "get", "service", "lb2", "-o", "jsonpath={.status.loadBalancer.ingress}")
		left, err3 := s.Kubectl("get", "apiservices,services,endpointslices", "-A", "-l", "app.kubernetes.io/name=metrics-server", "-o", "name")
		return err1 == nil && err2 == nil && err3 == nil && classes == "" && ips == "" && left == ""
	})
	if out, err := s.Kubectl("top", "nodes"); err == nil {
		t.Errorf("kubectl top nodes answered with metrics-server disabled:\n%s", out)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(s.MustKubectl("get", "node", node, "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`), "10251"), 2*time.Second); err == nil {
		c.Close()
		t.Error("something still listens on the metrics-server port 10251")
	}
}

// checkMetricsServer: kubectl top answers for the node and its pods, with
// CPU and memory figures, and the APIService is Available.
func checkMetricsServer(t *testing.T, s *testutil.Server, node string) {
	testutil.WaitFor(t, 3*time.Minute, "kubectl top nodes lists "+node+" with CPU and memory", func() bool {
		out, err := s.Kubectl("top", "nodes", "--no-headers")
		f := strings.Fields(out) // NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%)
		return err == nil && len(f) >= 5 && f[0] == node && testutil.TopNonZero(f[1]) && testutil.TopNonZero(f[3])
	})
	testutil.WaitFor(t, 2*time.Minute, "kubectl top pods -A lists the lbweb pod", func() bool {
		out, err := s.Kubectl("top", "pods", "-A", "--no-headers")
		return err == nil && strings.Contains(out, "lbweb")
	})
	if out := s.MustKubectl("get", "apiservice", "v1beta1.metrics.k8s.io", "-o", `jsonpath={.status.conditions[?(@.type=="Available")].status}`); out != "True" {
		t.Errorf("APIService v1beta1.metrics.k8s.io Available=%q", out)
	}
}

// checkLocalStorage: the bundled local-path StorageClass: a claim binds
// once a pod uses it, its data outlives the pod, and deleting the claim
// removes the directory under <data-dir>/storage.
func checkLocalStorage(t *testing.T, s *testutil.Server, node string) {
	if class := s.MustKubectl("get", "storageclass", "-o", `jsonpath={range .items[*]}{.metadata.name} {.metadata.annotations.storageclass\.kubernetes\.io/is-default-class}{"\n"}{end}`); strings.TrimSpace(class) != "local-path true" {
		t.Fatalf("storage classes: %q, want local-path as the default", class)
	}
	apply(t, s, volumeClaim)
	apply(t, s, volumePod("writer", "echo kept > /data/file"))
	waitPodPhase(t, s, "writer", "Succeeded")
	pv := s.MustKubectl("-n", "vol", "get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}")
	dir := s.MustKubectl("get", "pv", pv, "-o", "jsonpath={.spec.hostPath.path}")
	if filepath.Dir(dir) != filepath.Join(s.DataDir, "storage") {
		t.Errorf("volume directory %s is not in %s/storage", dir, s.DataDir)
	}
	if affinity := s.MustKubectl("get", "pv", pv, "-o", "jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"); affinity != node {
		t.Errorf("volume pinned to %q, want node %s", affinity, node)
	}
	s.MustKubectl("-n", "vol", "delete", "pod", "writer")
	apply(t, s, volumePod("reader", "cat /data/file"))
	waitPodPhase(t, s, "reader", "Succeeded")
	if got := s.MustKubectl("-n", "vol", "logs", "reader"); strings.TrimSpace(got) != "kept" {
		t.Errorf("the new pod reads %q, want kept", got)
	}
	// Nodes may only mark their own volumes removed (admission policy).
	refused := func(user, patch, why string) {
		out, err := s.Kubectl("--as", user, "--as-group", "system:nodes", "--as-group", "system:authenticated", "patch", "pv", pv, "--type=merge", "-p", patch)
		if err == nil || !strings.Contains(out, why) {
			t.Errorf("%s: patch %s: %v %q, want refused with %q", user, patch, err, out, why)
		}
	}
	refused("system:node:other", `{"metadata":{"annotations":{"storage.bramble.io/removed":"true"}}}`, "only the local-path volumes of its own node")
	refused("system:node:"+node, `{"metadata":{"labels":{"storage.bramble.io/node":"other"}}}`, "may not change a volume's labels")
	s.MustKubectl("-n", "vol", "delete", "pod", "reader")
	s.MustKubectl("-n", "vol", "delete", "pvc", "data")
	testutil.WaitFor(t, 2*time.Minute, "volume directory removed and volume deleted", func() bool {
		_, statErr := os.Stat(dir)
		out, _ := s.Kubectl("get", "pv", "-o", "name")
		return os.IsNotExist(statErr) && strings.TrimSpace(out) == ""
	})
}

func apply(t *testing.T, s *testutil.Server, manifest string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	s.MustKubectl("apply", "-f", f)
}

func waitPodPhase(t *testing.T, s *testutil.Server, pod, phase string) {
	t.Helper()
	testutil.WaitFor(t, 2*time.Minute, "pod "+pod+" "+phase, func() bool {
		out, _ := s.Kubectl("-n", "vol", "get", "pod", pod, "-o", "jsonpath={.status.phase}")
		if out == "Failed" {
			logs, _ := s.Kubectl("-n", "vol", "logs", pod)
			events, _ := s.Kubectl("-n", "vol", "get", "events")
			t.Fatalf("pod %s failed: %s\n%s", pod, logs, events)
		}
		return out == phase
	})
}

// checkServiceLB: a LoadBalancer Service gets the node's IP and answers on
// <node IP>:<port>; a second one on the same port stays pending with an
// Event until the first is deleted.
func checkServiceLB(t *testing.T, s *testutil.Server, node string) {
	nodeIP := s.MustKubectl("get", "node", node, "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`)
	s.MustKubectl("-n", "vol", "run", "lbweb", "--image="+busybox, "--image-pull-policy=Never", "--labels=app=lbweb", "--port=8080",
		"--command", "--", "sh", "-c", "mkdir -p /www && echo via-lb > /www/index.html && exec httpd -f -p 8080 -h /www")
	waitPodPhase(t, s, "lbweb", "Running")
	ingress := func(svc string) string {
		out, _ := s.Kubectl("-n", "vol", "get", "service", svc, "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}")
		return out
	}
	url := "http://" + net.JoinHostPort(nodeIP, "8080") + "/"
	s.MustKubectl("-n", "vol", "expose", "pod", "lbweb", "--type=LoadBalancer", "--port=8080", "--name=lb1")
	testutil.WaitFor(t, time.Minute, "lb1 gets the node IP", func() bool { return ingress("lb1") == nodeIP })
	testutil.WaitFor(t, time.Minute, "lb1 answers on "+url, func() bool {
		_, body := testutil.Get(url)
		return strings.TrimSpace(body) == "via-lb"
	})
	s.MustKubectl("-n", "vol", "expose", "pod", "lbweb", "--type=LoadBalancer", "--port=8080", "--name=lb2")
	testutil.WaitFor(t, time.Minute, "an Event saying why lb2 is pending", func() bool {
		out, _ := s.Kubectl("-n", "vol", "get", "events", "--field-selector", "involvedObject.name=lb2,reason=PortInUse", "-o", "jsonpath={.items[*].message}")
		return strings.Contains(out, "vol/lb1")
	})
	if ip := ingress("lb2"); ip != "" {
		t.Errorf("lb2 got %q although lb1 has port 8080", ip)
	}
	s.MustKubectl("-n", "vol", "delete", "service", "lb1")
	testutil.WaitFor(t, time.Minute, "lb2 gets the node IP once lb1 is gone", func() bool { return ingress("lb2") == nodeIP })
	testutil.WaitFor(t, time.Minute, "lb2 answers on "+url, func() bool {
		_, body := testutil.Get(url)
		return strings.TrimSpace(body) == "via-lb"
	})
}
