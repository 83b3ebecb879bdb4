package cluster_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// localStorageOnAgent: a claim used by a pod pinned to pi2 gets its
// directory in pi2's storage directory only, made and removed by pi2.
func (e *env) localStorageOnAgent(t *testing.T) {
	e.kubectl(t, "", "create", "namespace", "vol")
	testutil.WaitFor(t, time.Minute, "service account vol/default", func() bool {
		return e.c.KubectlCmd(e.ctx(time.Minute), "-n", "vol", "get", "serviceaccount", "default").Run() == nil
	})
	defer e.kubectl(t, "", "delete", "namespace", "vol", "--wait=false")
	e.kubectl(t, `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: vol}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer, namespace: vol}
spec:
  restartPolicy: Never
  nodeSelector: {kubernetes.io/hostname: pi2}
  containers:
  - name: c
    image: `+busybox+`
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo on-pi2 > /data/file"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data}
`, "apply", "-f", "-")
	testutil.WaitFor(t, 3*time.Minute, "pod writer Succeeded", func() bool {
		out, _ := e.c.KubectlCmd(e.ctx(time.Minute), "-n", "vol", "get", "pod", "writer", "-o", "jsonpath={.status.phase}").Output()
		return string(out) == "Succeeded"
	})
	pv := e.kubectl(t, "", "-n", "vol", "get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}")
	dir := e.kubectl(t, "", "get", "pv", pv, "-o", "jsonpath={.spec.hostPath.path}")
	for _, n := range e.c.Nodes() {
		own := filepath.Join(n.DataDir(), "storage", filepath.Base(dir))
		data, err := os.ReadFile(filepath.Join(own, "file"))
		switch {
		case n.Host == "pi2" && (own != dir || strings.TrimSpace(string(data)) != "on-pi2"):
			t.Errorf("pi2: volume at %s (want %s), file: %q %v", dir, own, data, err)
		case n.Host != "pi2":
			if _, err := os.Stat(own); err == nil {
				t.Errorf("%s also has the volume directory %s", n.Host, own)
			}
		}
	}
	e.kubectl(t, "", "-n", "vol", "delete", "pod", "writer")
	e.kubectl(t, "", "-n", "vol", "delete", "pvc", "data")
	testutil.WaitFor(t, 2*time.Minute, "pi2 removed "+dir+" and the volume is deleted", func() bool {
		_, err := os.Stat(dir)
		out, _ := e.c.KubectlCmd(e.ctx(time.Minute), "get", "pv", pv, "-o", "name").CombinedOutput()
		return os.IsNotExist(err) && strings.Contains(string(out), "NotFound")
	})
}

// loadBalancerOnEveryNode: a LoadBalancer Service for the Plumber API gets
// every node's IP and answers odd on port 8080 of each; a second Service
// on 8080 stays pending with an Event until the first is deleted.
func (e *env) loadBalancerOnEveryNode(t *testing.T) {
	svc := func(name string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %s, namespace: %s}
spec:
  type: LoadBalancer
  selector: {app.kubernetes.io/name: plumber-api}
  ports: [{port: 8080, targetPort: http}]
`, name, plumberNS)
	}
	var want []string
	for _, n := range e.c.Nodes() {
		want = append(want, n.IP())
	}
	slices.Sort(want)
	ingress := func(name string) string {
		out, _ := e.c.KubectlCmd(e.ctx(time.Minute), "-n", plumberNS, "get", "service", name, "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}").Output()
		ips := strings.Fields(string(out))
		slices.Sort(ips)
		return strings.Join(ips, " ")
	}
	answers := func(what string) {
		for _, ip := range want {
			url := "http://" + ip + ":8080/parity?int=15"
			testutil.WaitFor(t, 4*time.Minute, what+": odd from "+url, func() bool {
				code, body := e.c.Get(url)
				return code == 200 && strings.TrimSpace(body) == "odd"
			})
		}
	}
	e.kubectl(t, svc("lb-first"), "apply", "-f", "-")
	defer e.c.KubectlCmd(e.ctx(time.Minute), "-n", plumberNS, "delete", "service", "lb-first", "lb-second", "--ignore-not-found").Run()
	testutil.WaitFor(t, time.Minute, "lb-first gets every node IP", func() bool { return ingress("lb-first") == strings.Join(want, " ") })
	answers("lb-first")
	e.kubectl(t, svc("lb-second"), "apply", "-f", "-")
	testutil.WaitFor(t, time.Minute, "a PortInUse Event for lb-second", func() bool {
		out, _ := e.c.KubectlCmd(e.ctx(time.Minute), "-n", plumberNS, "get", "events", "--field-selector", "involvedObject.name=lb-second,reason=PortInUse", "-o", "name").Output()
		return strings.TrimSpace(string(out)) != ""
	})
	if got := ingress("lb-second"); got != "" {
		t.Errorf("lb-second got %q while lb-first has port 8080", got)
	}
	e.kubectl(t, "", "-n", plumberNS, "delete", "service", "lb-first")
	testutil.WaitFor(t, time.Minute, "lb-second gets every node IP", func() bool { return ingress("lb-second") == strings.Join(want, " ") })
	answers("lb-second")
}

// topNodes: kubectl top nodes lists every node with non-zero CPU and
// memory (the server's in-process metrics-server scrapes each kubelet over
// its serving certificate), and kubectl top pods -A answers.
func (e *env) topNodes(t *testing.T) {
	testutil.WaitFor(t, 3*time.Minute, "kubectl top nodes lists every node with CPU and memory", func() bool {
		out, err := e.c.KubectlCmd(e.ctx(time.Minute), "top", "nodes", "--no-headers").CombinedOutput()
		if err != nil {
			return false
		}
		seen := map[string]bool{}
		for _, line := range strings.Split(string(out), "\n") {
			// NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%); a node
			// without figures yet has <unknown> in each column.
			if f := strings.Fields(line); len(f) >= 5 && testutil.TopNonZero(f[1]) && testutil.TopNonZero(f[3]) {
				seen[f[0]] = true
			}
		}
		for _, n := range e.c.Nodes() {
			if !seen[n.Host] {
				return false
			}
		}
		return true
	})
	t.Logf("kubectl top nodes:\n%s", e.kubectl(t, "", "top", "nodes"))
	testutil.WaitFor(t, 2*time.Minute, "kubectl top pods -A lists the Plumber API", func() bool {
		out, err := e.c.KubectlCmd(e.ctx(time.Minute), "top", "pods", "-A", "--no-headers").Output()
		return err == nil && strings.Contains(string(out), "plumber-api-")
	})
}
