package cluster_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bramble-pi/bramble/tests/cluster"
	"github.com/bramble-pi/bramble/tests/testutil"
)

// pulledImage is the busybox test image under a name no node has: only
// `bramble images import` on the server brings it into the cluster.
const (
	pulledImage = "docker.io/bramble/regtest:pulled"
	pulledText  = "pulled through the server"
)

// imagesImport: an archive imported with `bramble images import` on the
// server runs as a Deployment with a replica on every node; the agents,
// which have no copy of the archive, pull it through the server's
// registry (IfNotPresent). `bramble images ls` then shows it on all three.
func (e *env) imagesImport(t *testing.T) {
	server := e.node("pi1")
	archive := filepath.Join(server.Dir, "regtest.tar")
	src := filepath.Join(testutil.RepoRoot(t), "dist", "images", testutil.Arch(), "busybox.tar")
	// One layer more than busybox, which every node has: the agents must
	// fetch a layer, not only the manifest and config.
	if err := cluster.RetagArchive(src, archive, pulledImage, map[string]string{"pulled.txt": pulledText + "\n"}); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	out, err := e.c.InNode(server, testutil.Binary(t), "images", "import", "--data-dir", server.DataDir(), archive).CombinedOutput()
	if err != nil {
		t.Fatalf("bramble images import: %v\n%s", err, out)
	}
	imported := time.Since(begin)
	if !strings.Contains(string(out), pulledImage) {
		t.Errorf("bramble images import did not print %s:\n%s", pulledImage, out)
	}
	for _, n := range e.c.Nodes()[:3] {
		_, err := os.Stat(filepath.Join(n.DataDir(), "agent", "images", "regtest.tar"))
		if kept := err == nil; kept != (n == server) {
			t.Errorf("%s: archive kept in agent/images = %v", n.Host, kept)
		}
	}

	manifest := `apiVersion: v1
kind: Namespace
metadata: {name: pulled}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: pulled, namespace: pulled}
spec:
  replicas: 3
  selector: {matchLabels: {app: pulled}}
  template:
    metadata: {labels: {app: pulled}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - topologyKey: kubernetes.io/hostname
            labelSelector: {matchLabels: {app: pulled}}
      containers:
      - name: sleep
        image: ` + pulledImage + `
        imagePullPolicy: IfNotPresent
        command: [sh, -c, "cat /pulled.txt && exec sleep 3600"]
`
	e.kubectl(t, manifest, "apply", "-f", "-")
	e.kubectl(t, "", "-n", "pulled", "rollout", "status", "deployment/pulled", "--timeout=3m")
	t.Logf("imported in %.1f s; 3 replicas ready %.1f s after the import started", imported.Seconds(), time.Since(begin).Seconds())
	pods, err := e.cs.CoreV1().Pods("pulled").List(e.ctx(time.Minute), metav1.ListOptions{LabelSelector: "app=pulled"})
	if err != nil {
		t.Fatal(err)
	}
	on := map[string]bool{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && podReady(&p) {
			on[p.Spec.NodeName] = true
			if out := e.kubectl(t, "", "-n", "pulled", "logs", p.Name); out != pulledText {
				t.Errorf("pod on %s printed %q, want the added layer's %q", p.Spec.NodeName, out, pulledText)
			}
		}
	}
	if !on["pi1"] || !on["pi2"] || !on["pi3"] {
		t.Errorf("ready replicas on %v, want pi1, pi2 and pi3", on)
	}

	// The kubelets report the image in their node status.
	var ls string
	testutil.WaitFor(t, time.Minute, "bramble images ls shows the image on pi1, pi2 and pi3", func() bool {
		out, err := e.c.InNode(server, testutil.Binary(t), "images", "ls", "--data-dir", server.DataDir()).CombinedOutput()
		ls = string(out)
		for _, line := range strings.Split(ls, "\n") {
			if f := strings.Fields(line); err == nil && len(f) > 0 && f[0] == pulledImage {
				return f[len(f)-1] == "pi1,pi2,pi3"
			}
		}
		return false
	})
	t.Logf("bramble images ls:\n%s", ls)
	e.kubectl(t, "", "delete", "namespace", "pulled", "--wait=false")
}

// registryAccess: the registry on :6443 (what the agents pulled through)
// lets a node's client certificate read content, and nothing more; without
// a certificate, or with the admin's, it refuses.
func (e *env) registryAccess(t *testing.T) {
	server, agent := e.node("pi1"), e.node("pi2")
	ca, err := os.ReadFile(filepath.Join(server.DataDir(), "server", "tls", "server-ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	load := func(dir, name string) []tls.Certificate {
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}
	nodeCert := load(filepath.Join(agent.DataDir(), "agent", "tls"), "client-kubelet")
	adminCert := load(filepath.Join(server.DataDir(), "server", "tls"), "client-admin")
	base := "https://" + server.IP() + ":6443/v2/"
	manifest := base + "bramble/regtest/manifests/pulled?ns=docker.io"
	for _, tc := range []struct {
		name, method, url string
		certs             []tls.Certificate
		status            int
	}{
		{"NoCertificate", http.MethodGet, manifest, nil, http.StatusUnauthorized},
		{"Admin", http.MethodGet, manifest, adminCert, http.StatusForbidden},
		{"NodeBase", http.MethodGet, base, nodeCert, http.StatusOK},
		{"NodeManifest", http.MethodHead, manifest, nodeCert, http.StatusOK},
		{"NodeBusyboxNormalised", http.MethodHead, base + "bramble/busybox/manifests/test", nodeCert, http.StatusOK},
		{"NodeUnknownName", http.MethodHead, base + "library/nothing/manifests/1?ns=docker.io", nodeCert, http.StatusNotFound},
		{"NodePush", http.MethodPost, base + "bramble/regtest/blobs/uploads/?ns=docker.io", nodeCert, http.StatusMethodNotAllowed},
		{"NodeCatalog", http.MethodGet, base + "_catalog", nodeCert, http.StatusNotFound},
	} {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext:     cluster.DialContext(e.c.SwitchNetNS()),
			TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: tc.certs, MinVersion: tls.VersionTLS12},
		}}
		req, _ := http.NewRequest(tc.method, tc.url, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %s %s: %d, want %d", tc.name, tc.method, tc.url, resp.StatusCode, tc.status)
		}
		if tc.name == "NodeManifest" && !strings.HasPrefix(resp.Header.Get("Docker-Content-Digest"), "sha256:") {
			t.Errorf("%s: no Docker-Content-Digest: %v", tc.name, resp.Header)
		}
	}
}
