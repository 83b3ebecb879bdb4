package cluster_test

// Node identities (issue 13, items 1-4): what a join token and a node's own
// credentials can obtain, tried as an attacker on the LAN would.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/bramble-pi/bramble/pkg/join"
	"github.com/bramble-pi/bramble/pkg/nodecreds"
	"github.com/bramble-pi/bramble/tests/cluster"
	"github.com/bramble-pi/bramble/tests/testutil"
)

// serverCAPool is the CA that clients trust for the apiserver.
func (e *env) serverCAPool(t *testing.T) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(e.node("pi1").DataDir(), "server", "tls", "server-ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(data)
	return pool
}

// rawJoin posts a join request as a machine on the LAN would, with the
// server token, CSRs for fresh keys in keyDir, and password; it returns the
// HTTP status and body.
func (e *env) rawJoin(t *testing.T, nodeName, nodeIP, password, keyDir string) (int, []byte) {
	t.Helper()
	tok, err := e.c.Token()
	if err != nil {
		t.Fatal(err)
	}
	_, secret, _ := strings.Cut(tok, "::server:")
	csrs, err := nodecreds.In(keyDir).CSRs(nodeName)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(join.NodeRequest{NodeName: nodeName, NodeIP: nodeIP, CSRs: csrs})
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("https://%s:%d%s", e.node("pi1").IP(), cluster.APIPort, join.NodePath), bytes.NewReader(body))
	req.SetBasicAuth("server", secret)
	req.Header.Set(join.PasswordHeader, password)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext:     cluster.DialContext(e.c.SwitchNetNS()),
		TLSClientConfig: &tls.Config{RootCAs: e.serverCAPool(t), MinVersion: tls.VersionTLS12},
	}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// forgedNameRefused: a valid token does not buy a certificate for the
// apiserver's names or addresses, and a kubelet's serving certificate (from
// its own CA) cannot pass for the apiserver.
func (e *env) forgedNameRefused(t *testing.T) {
	snapshot := e.serverSnapshot(t)
	for _, tc := range []struct{ name, ip string }{
		{"kubernetes.default.svc.cluster.local", "10.43.0.1"},
		{"kubernetes", "10.250.0.9"},
		{"localhost", "10.250.0.9"},
		{"pi9", "10.250.0.1"}, // the server's address
		{"pi9", "127.0.0.1"},
	} {
		code, body := e.rawJoin(t, tc.name, tc.ip, "forged-0123456789abcdef", t.TempDir())
		if code != http.StatusForbidden || bytes.Contains(body, []byte("BEGIN CERTIFICATE")) {
			t.Errorf("join as %s/%s: HTTP %d %s, want 403 and no certificate", tc.name, tc.ip, code, body)
		} else {
			t.Logf("join as %s/%s refused: %s", tc.name, tc.ip, strings.TrimSpace(string(body)))
		}
	}
	if got := e.serverSnapshot(t); got != snapshot {
		t.Errorf("refused joins changed the server:\nbefore:\n%s\nafter:\n%s", snapshot, got)
	}
	creds := nodecreds.In(filepath.Join(e.node("pi2").DataDir(), "agent"))
	serving := readCert(t, creds.ServingCert)
	if _, err := serving.Verify(x509.VerifyOptions{Roots: e.serverCAPool(t)}); err == nil {
		t.Error("pi2's kubelet serving certificate verifies against the server CA: it could impersonate the apiserver")
	}
	// The apiserver still reaches the kubelets (their own CA): logs of a pod on an agent.
	pods := e.podsOn(t, plumberNS, plumberLB, "pi2")
	if len(pods) == 0 {
		t.Fatal("no Plumber pod on pi2")
	}
	if _, err := e.cs.CoreV1().Pods(plumberNS).GetLogs(pods[0], &corev1.PodLogOptions{}).DoRaw(e.ctx(time.Minute)); err != nil {
		t.Errorf("logs of %s on pi2 through the apiserver: %v", pods[0], err)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// joinSendsNoPrivateKey: a join answers with certificates for the keys the
// node generated; no private key is in the answer.
func (e *env) joinSendsNoPrivateKey(t *testing.T) {
	keys := t.TempDir()
	code, body := e.rawJoin(t, "pi9", "10.250.0.9", "pi9-password-0123456789", keys)
	t.Cleanup(func() {
		_ = e.cs.CoreV1().Secrets("kube-system").Delete(context.Background(), "pi9.node-password.bramble", metav1.DeleteOptions{})
	})
	if code != http.StatusOK {
		t.Fatalf("join as pi9: HTTP %d %s", code, body)
	}
	if bytes.Contains(body, []byte("PRIVATE KEY")) {
		t.Error("the join answer holds a private key")
	}
	var resp join.NodeResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	for name, cert := range resp.Certs.Certs {
		if bytes.Contains(cert, []byte("PRIVATE KEY")) {
			t.Errorf("%s holds a private key", name)
		}
	}
	if err := nodecreds.In(keys).Write(resp.Certs); err != nil {
		t.Errorf("the certificates do not hold the node's own public keys: %v", err)
	}
	// The agents' own keys stayed on the agents: 0600 files there.
	for _, host := range []string{"pi2", "pi3"} {
		creds := nodecreds.In(filepath.Join(e.node(host).DataDir(), "agent"))
		fi, err := os.Stat(creds.Key(nodecreds.KubeletClient))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s kubelet key: %v %v", host, fi, err)
		}
	}
}

// nodeClient is a clientset with one identity of a node's stored credentials.
func (e *env) nodeClient(t *testing.T, host, identity string) *kubernetes.Clientset {
	t.Helper()
	creds := nodecreds.In(filepath.Join(e.node(host).DataDir(), "agent"))
	cfg := &rest.Config{
		Host: fmt.Sprintf("https://%s:%d", e.node("pi1").IP(), cluster.APIPort),
		TLSClientConfig: rest.TLSClientConfig{CAFile: creds.ServerCA,
			CertFile: creds.Cert(identity), KeyFile: creds.Key(identity)},
		Dial:    cluster.DialContext(e.c.SwitchNetNS()),
		Timeout: 15 * time.Second,
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// flannelOwnNodeOnly: pi2's flannel identity may set its own flannel
// annotations and NetworkUnavailable condition, and nothing else.
func (e *env) flannelOwnNodeOnly(t *testing.T) {
	flannel := e.nodeClient(t, "pi2", nodecreds.FlannelClient)
	ctx := e.ctx(2 * time.Minute)
	patch := func(node, body string) error {
		_, err := flannel.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, []byte(body), metav1.PatchOptions{}, "status")
		return err
	}
	now := time.Now().UTC().Format(time.RFC3339)
	for _, tc := range []struct{ what, node, body string }{
		{"another node's flannel annotation", "pi3", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"10.250.0.66"}}}`},
		{"its own control-plane label", "pi2", `{"metadata":{"labels":{"node-role.kubernetes.io/control-plane":"true"}}}`},
		{"its own non-flannel annotation", "pi2", `{"metadata":{"annotations":{"example.com/x":"y"}}}`},
		{"its own InternalIP", "pi2", `{"status":{"addresses":[{"type":"InternalIP","address":"10.250.0.66"}]}}`},
		{"its own Ready condition", "pi2", `{"status":{"conditions":[{"type":"Ready","status":"False","reason":"Forged","lastHeartbeatTime":"` + now + `","lastTransitionTime":"` + now + `"}]}}`},
	} {
		err := patch(tc.node, tc.body)
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("pi2's flannel changing %s: %v, want forbidden", tc.what, err)
		} else {
			t.Logf("pi2's flannel changing %s refused: %v", tc.what, err)
		}
	}
	if err := patch("pi2", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/bramble-test":"ok"}}}`); err != nil {
		t.Errorf("pi2's flannel setting its own flannel annotation: %v", err)
	}
	if err := patch("pi2", `{"metadata":{"annotations":{"flannel.alpha.coreos.com/bramble-test":null}}}`); err != nil {
		t.Errorf("pi2's flannel removing its own flannel annotation: %v", err)
	}
	if err := patch("pi2", `{"status":{"conditions":[{"type":"NetworkUnavailable","status":"False","reason":"FlannelIsUp","message":"test","lastHeartbeatTime":"`+now+`","lastTransitionTime":"`+now+`"}]}}`); err != nil {
		t.Errorf("pi2's flannel setting its own NetworkUnavailable condition: %v", err)
	}
	n, err := e.cs.CoreV1().Nodes().Get(ctx, "pi3", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Annotations["flannel.alpha.coreos.com/public-ip"] != "10.250.0.3" {
		t.Errorf("pi3's flannel public IP is %q", n.Annotations["flannel.alpha.coreos.com/public-ip"])
	}
}

// nameKeptAfterDeleteNode: `kubectl delete node` of a running agent stops it
// (kube-proxy exits when its Node goes, logged as a warning); while it is
// down another machine cannot take its name; started again it registers and
// keeps the name past the grace time.
func (e *env) nameKeptAfterDeleteNode(t *testing.T) {
	pi3 := e.node("pi3")
	before, _ := os.ReadFile(pi3.LogFile())
	deleted := time.Now()
	if err := e.cs.CoreV1().Nodes().Delete(e.ctx(time.Minute), "pi3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "pi3's bramble stopped after its Node was deleted", func() bool { return !pi3.Process.Alive() })
	t.Logf("pi3's bramble stopped %.1f s after kubectl delete node", time.Since(deleted).Seconds())
	all, _ := os.ReadFile(pi3.LogFile())
	if log := string(all[len(before):]); !strings.Contains(log, `level=WARN msg="Node is being deleted"`) || !strings.Contains(log, "means=") {
		t.Errorf("pi3's log does not explain why it stopped:\n%s", lastLines(log, 10))
	}
	code, body := e.rawJoin(t, "pi3", "10.250.0.9", "another-machine-0123456789", t.TempDir())
	if code != http.StatusConflict {
		t.Errorf("another machine claiming pi3 while it is down: HTTP %d %s, want 409", code, body)
	}
	if _, err := e.c.Restart(pi3); err != nil {
		t.Fatal(err)
	}
	if err := e.c.WaitReadySince(e.ctx(3*time.Minute), pi3.Started, pi3); err != nil {
		t.Fatal(err)
	}
	t.Logf("pi3 Ready again %.1f s after its bramble started", time.Since(pi3.Started).Seconds())
	if wait := time.Until(deleted.Add(join.NameGrace + 5*time.Second)); wait > 0 {
		time.Sleep(wait)
	}
	if _, err := e.cs.CoreV1().Secrets("kube-system").Get(e.ctx(time.Minute), "pi3.node-password.bramble", metav1.GetOptions{}); err != nil {
		t.Errorf("pi3's node password after the grace time: %v", err)
	}
	code, body = e.rawJoin(t, "pi3", "10.250.0.9", "another-machine-0123456789", t.TempDir())
	if code != http.StatusConflict {
		t.Errorf("another machine claiming pi3 after it is back: HTTP %d %s, want 409", code, body)
	}
	testutil.WaitFor(t, 2*time.Minute, "odd from pi3 again", func() bool {
		code, body := e.c.Get("http://10.250.0.3/parity?int=15")
		return code == 200 && strings.TrimSpace(body) == "odd"
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// nodeCertValidity is the test cluster's --node-cert-validity: renewed a
// third before expiry, several times over the checks.
const nodeCertValidity = 3 * time.Minute

// e0certs records each node's first kubelet client certificate.
func e0certs(t *testing.T, c *cluster.Cluster) map[string]string {
	out := map[string]string{}
	for _, n := range c.Nodes() {
		out[n.Host] = readCert(t, nodecreds.In(filepath.Join(n.DataDir(), "agent")).Cert(nodecreds.KubeletClient)).SerialNumber.String()
	}
	return out
}

// nodeCertificatesRenewed: with certificates of a few minutes, every node
// renewed its own while running (no token, no restart needed) and the cluster
// kept working: nodes Ready, the apiserver reaches every kubelet (logs).
func (e *env) nodeCertificatesRenewed(t *testing.T) {
	for _, n := range e.c.Nodes() {
		if _, ok := e.firstCerts[n.Host]; !ok {
			continue // pi4/pi5: joined later and gone
		}
		creds := nodecreds.In(filepath.Join(n.DataDir(), "agent"))
		// A node restarted by an earlier check may have joined again (its
		// certificates expired while it was down): wait for a renewal while
		// it runs.
		testutil.WaitFor(t, 2*nodeCertValidity, n.Host+" renewed its certificates while running", func() bool {
			b, _ := os.ReadFile(n.LogFile())
			return strings.Contains(string(b), "node certificates renewed")
		})
		if readCert(t, creds.Cert(nodecreds.KubeletClient)).SerialNumber.String() == e.firstCerts[n.Host] {
			t.Errorf("%s still has its first certificate", n.Host)
		}
		for _, id := range []string{nodecreds.KubeletClient, nodecreds.KubeletServing, nodecreds.KubeProxyClient, nodecreds.FlannelClient} {
			c := readCert(t, creds.Cert(id))
			if life := c.NotAfter.Sub(c.NotBefore); life > nodeCertValidity+time.Minute {
				t.Errorf("%s %s is valid for %s, want about %s", n.Host, id, life, nodeCertValidity)
			}
			if time.Now().After(c.NotAfter) {
				t.Errorf("%s %s expired at %s", n.Host, id, c.NotAfter)
			}
		}
	}
	if err := e.c.WaitReady(e.ctx(2*time.Minute), true, e.node("pi1"), e.node("pi2"), e.node("pi3")); err != nil {
		t.Error(err)
	}
	for _, host := range []string{"pi1", "pi2", "pi3"} {
		pods, err := e.cs.CoreV1().Pods("").List(e.ctx(time.Minute), metav1.ListOptions{FieldSelector: "spec.nodeName=" + host + ",status.phase=Running"})
		if err != nil || len(pods.Items) == 0 {
			t.Errorf("running pods on %s: %v", host, err)
			continue
		}
		p := pods.Items[0]
		if _, err := e.cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: p.Spec.Containers[0].Name}).DoRaw(e.ctx(time.Minute)); err != nil {
			t.Errorf("logs of %s/%s on %s (the apiserver reaching the kubelet): %v", p.Namespace, p.Name, host, err)
		}
	}
}
