package join

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/bramble-pi/bramble/pkg/nodecreds"
	"github.com/bramble-pi/bramble/pkg/pki"
)

func testCA(t *testing.T) *pki.Authority {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), "test-client-ca", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// A joined node re-checks its password with its kubelet client certificate:
// the record is re-created when missing, a different password is refused, and
// a certificate that is not a node's (or not from the cluster's client CA)
// gets nothing.
func TestPasswordRecheck(t *testing.T) {
	clientCA, otherCA := testCA(t), testCA(t)
	s, err := NewServer(ServerOptions{CABundle: []byte("ca"), ClientCA: clientCA.CertPEM, ServerNode: "pi1", Issuer: &fakeIssuer{}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "pi2"}})
	s.SetClient(cs)
	ts := httptest.NewUnstartedServer(s.Wrap(http.NotFoundHandler()))
	ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	ts.StartTLS()
	defer ts.Close()

	// A node's credentials directory, as a join leaves it.
	nodeCreds := func(ca *pki.Authority, leaf pki.Leaf) nodecreds.Files {
		dir := t.TempDir()
		creds := nodecreds.In(dir)
		if _, err := ca.EnsureLeaf(creds.Cert(nodecreds.KubeletClient), creds.Key(nodecreds.KubeletClient), leaf, time.Now()); err != nil {
			t.Fatal(err)
		}
		serverCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
		if err := os.WriteFile(creds.ServerCA, serverCA, 0o600); err != nil {
			t.Fatal(err)
		}
		return creds
	}
	node := func(name string) pki.Leaf {
		return pki.Leaf{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}, Client: true}
	}
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	const pw = "0123456789abcdef0123"

	pi2 := nodeCreds(clientCA, node("pi2"))
	if err := recheckPassword(ctx, ts.URL, pi2, pw, log); err != nil {
		t.Fatalf("first re-check: %v", err)
	}
	if hash := storedHash(t, cs, "pi2"); hash != string(hashPassword(pw)) {
		t.Errorf("record after the re-check: %q", hash)
	}
	if err := recheckPassword(ctx, ts.URL, pi2, pw, log); err != nil {
		t.Errorf("same password again: %v", err)
	}
	for _, tc := range []struct {
		name     string
		creds    nodecreds.Files
		password string
		want     string
	}{
		{"other password", pi2, pw + "x", "node password mismatch"},
		{"not a node's certificate", nodeCreds(clientCA, pki.Leaf{CommonName: "system:kube-proxy", Client: true}), pw, "is not a node's"},
		{"another cluster's CA", nodeCreds(otherCA, node("pi2")), pw, "client certificate"},
	} {
		err := recheckPassword(ctx, ts.URL, tc.creds, tc.password, log)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if hash := storedHash(t, cs, "pi2"); hash != string(hashPassword(pw)) {
		t.Errorf("refused re-checks changed the record: %q", hash)
	}
}

func storedHash(t *testing.T, cs kubernetes.Interface, node string) string {
	t.Helper()
	s, err := cs.CoreV1().Secrets(passwordNamespace).Get(context.Background(), passwordSecretName(node), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(s.Data["hash"])
}

// A deleted Node's name is freed after the grace time, unless the Node is
// back by then; records of Nodes deleted while the server was down are freed
// at start, except young ones (a node that has joined but not registered).
func TestDeleteNodePasswordsGrace(t *testing.T) {
	record := func(node string, age time.Duration) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: passwordSecretName(node), Namespace: passwordNamespace,
			Labels: map[string]string{managedBy: "bramble"}, CreationTimestamp: metav1.NewTime(time.Now().Add(-age))},
			Data: map[string][]byte{"hash": hashPassword("x")}}
	}
	nodeObj := func(name string) *corev1.Node { return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}} }
	cs := fake.NewClientset(nodeObj("gone-for-good"), nodeObj("back-soon"),
		record("gone-for-good", time.Hour), record("back-soon", time.Hour), record("orphan", time.Hour), record("just-joined", 0))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const grace = 300 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- deleteNodePasswords(ctx, cs, grace, slog.New(slog.DiscardHandler)) }()

	time.Sleep(100 * time.Millisecond) // the informer's first list
	nodes := cs.CoreV1().Nodes()
	for _, n := range []string{"gone-for-good", "back-soon"} {
		if err := nodes.Delete(ctx, n, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(grace / 3)
	if _, err := nodes.Create(ctx, nodeObj("back-soon"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"gone-for-good": false, "back-soon": true, "orphan": false, "just-joined": true}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := map[string]bool{}
		for n := range want {
			got[n] = storedHash(t, cs, n) != ""
		}
		if maps.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("records kept: %v, want %v", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * grace) // nothing else goes
	if storedHash(t, cs, "back-soon") == "" || storedHash(t, cs, "just-joined") == "" {
		t.Error("a record was freed after the grace time although its Node is back or it is young")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
