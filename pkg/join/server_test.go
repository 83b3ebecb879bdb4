package join

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/bramble-pi/bramble/pkg/nodecreds"
	"github.com/bramble-pi/bramble/pkg/token"
)

// The join handlers, in front of a stand-in for the apiserver, with a fake
// clientset: every refusal, and what each accepted request obtains.
func TestServerHandlers(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n")
	cfg := ClusterConfig{ClusterCIDR: "10.42.0.0/16", ServiceCIDR: "10.43.0.0/16", ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local", FlannelBackend: "vxlan"}
	serverTok := token.Token{User: "server", Secret: "server-secret-1234"}
	agentTok := token.Token{User: "node", Secret: "agent-secret-5678"}
	issuer := &fakeIssuer{ca: ca}
	clientCA := testCA(t)
	s, err := NewServer(ServerOptions{CABundle: ca, ClientCA: clientCA.CertPEM, Cluster: cfg, Tokens: []token.Token{serverTok, agentTok, {User: "unused"}},
		ServerNode: "pi1", Issuer: issuer}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	apiserver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "apiserver:"+r.URL.Path) })
	ts := httptest.NewServer(s.Wrap(apiserver))
	defer ts.Close()

	cs := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "registered"}})
	boot, err := token.CreateBootstrap(context.Background(), cs, ca, time.Hour, "test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	expired, err := token.CreateBootstrap(context.Background(), cs, ca, time.Second, "old", time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}

	type call struct {
		name, method, path, user, secret, password, body string
		wantCode                                         int
		wantBody                                         string
	}
	join := func(name, user, secret, password, node, ip string, code int, body string) call {
		return call{name: name, method: "POST", path: NodePath, user: user, secret: secret, password: password,
			body: `{"nodeName":"` + node + `","nodeIP":"` + ip + `","csrs":{"client-kubelet":"Y3Ny"}}`, wantCode: code, wantBody: body}
	}
	const pw = "0123456789abcdef0123"
	do := func(c call) (int, string) {
		req, _ := http.NewRequest(c.method, ts.URL+c.path, strings.NewReader(c.body))
		if c.user != "" || c.secret != "" {
			req.SetBasicAuth(c.user, c.secret)
		}
		if c.password != "" {
			req.Header.Set(PasswordHeader, c.password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// Before the apiserver is up: static tokens authenticate, but claiming
	// a name needs the API.
	if code, body := do(join("starting", "node", agentTok.Secret, pw, "pi2", "10.0.0.2", 0, "")); code != http.StatusServiceUnavailable {
		t.Errorf("before SetClient: %d %q, want 503", code, body)
	}
	s.SetClient(cs)

	for _, c := range []call{
		{name: "cacerts unauthenticated", method: "GET", path: CACertsPath, wantCode: 200, wantBody: string(ca)},
		{name: "other paths go to the apiserver", method: "GET", path: "/api/v1/nodes", wantCode: 200, wantBody: "apiserver:/api/v1/nodes"},
		{name: "removed config endpoint is the apiserver's", method: "GET", path: "/v1-bramble/config", user: "server", secret: serverTok.Secret, wantCode: 200, wantBody: "apiserver:/v1-bramble/config"},
		{name: "GET node", method: "GET", path: NodePath, wantCode: 405},
		join("no credentials", "", "", pw, "pi2", "10.0.0.2", 401, ""),
		join("wrong secret", "node", "nope", pw, "pi2", "10.0.0.2", 401, ""),
		join("empty static secret never matches", "unused", "", pw, "pi2", "10.0.0.2", 401, ""),
		join("expired bootstrap token", expired.User, expired.Secret, pw, "pi2", "10.0.0.2", 401, ""),
		join("bad node name", "node", agentTok.Secret, pw, "Pi_2", "10.0.0.2", 400, "not valid"),
		join("bad node IP", "node", agentTok.Secret, pw, "pi2", "ten", 400, "not an IP"),
		join("short password", "node", agentTok.Secret, "short", "pi2", "10.0.0.2", 400, "node password"),
		join("server's own name", "node", agentTok.Secret, pw, "pi1", "10.0.0.2", 409, "server's own node"),
		join("agent token", "node", agentTok.Secret, pw, "pi2", "10.0.0.2", 200, `"clusterCIDR":"10.42.0.0/16"`),
		join("same name, same password", "server", serverTok.Secret, pw, "pi2", "10.0.0.2", 200, ""),
		join("same name, other password", "node", agentTok.Secret, pw+"x", "pi2", "10.0.0.9", 409, "kubectl delete node pi2"),
		join("bootstrap token", boot.User, boot.Secret, pw, "pi3", "10.0.0.3", 200, ""),
		join("signing fails", "node", agentTok.Secret, pw, "broken", "10.0.0.4", 400, "could not sign"),
		join("reserved name", "node", agentTok.Secret, pw, "kubernetes.default.svc.cluster.local", "10.0.0.5", 403, "reserved"),
		join("reserved IP", "node", agentTok.Secret, pw, "pi5", "10.43.0.1", 403, "reserved"),
		join("Node exists without a password", "node", agentTok.Secret, pw, "registered", "10.0.0.6", 409, "without a node password"),
		{name: "no certificate requests", method: "POST", path: NodePath, user: "node", secret: agentTok.Secret, password: pw,
			body: `{"nodeName":"pi6","nodeIP":"10.0.0.6"}`, wantCode: 400, wantBody: "no certificate requests"},
		{name: "password re-check without a certificate", method: "POST", path: PasswordPath, password: pw, wantCode: 401, wantBody: "no client certificate"},
		{name: "malformed body", method: "POST", path: NodePath, user: "node", secret: agentTok.Secret, password: pw, body: "{", wantCode: 400},
	} {
		code, body := do(c)
		if code != c.wantCode || !strings.Contains(body, c.wantBody) {
			t.Errorf("%s: %d %q, want %d containing %q", c.name, code, body, c.wantCode, c.wantBody)
		}
		if c.name == "agent token" {
			var resp NodeResponse
			if err := json.NewDecoder(bytes.NewReader([]byte(body))).Decode(&resp); err != nil || resp.Config != cfg || string(resp.Certs.ServerCA) != string(ca) {
				t.Errorf("agent token: response %+v, %v", resp, err)
			}
		}
	}
	if want := []string{"pi2/10.0.0.2", "pi2/10.0.0.2", "pi3/10.0.0.3"}; strings.Join(issuer.signed, ",") != strings.Join(want, ",") {
		t.Errorf("credentials signed for %v, want %v", issuer.signed, want)
	}
	// Names claimed: one password Secret each, none for refused joins.
	secrets, err := cs.CoreV1().Secrets(passwordNamespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sec := range secrets.Items {
		if strings.HasSuffix(sec.Name, passwordSuffix) {
			names = append(names, sec.Name)
		}
	}
	if strings.Join(names, ",") != "broken"+passwordSuffix+",pi2"+passwordSuffix+",pi3"+passwordSuffix {
		t.Errorf("node password Secrets: %v", names)
	}
}

// fakeIssuer signs nothing: it records what it was asked to sign and reserves
// what a server would (the apiserver's name, the service network).
type fakeIssuer struct {
	ca     []byte
	signed []string
}

func (f *fakeIssuer) Reserved(name string, ip net.IP) error {
	if strings.HasPrefix(name, "kubernetes") || strings.HasPrefix(ip.String(), "10.43.") {
		return errors.New("node name or IP is reserved")
	}
	return nil
}

func (f *fakeIssuer) SignNode(name string, ip net.IP, csrs map[string][]byte) (nodecreds.Bundle, error) {
	if name == "broken" {
		return nodecreds.Bundle{}, errors.New("signing failed")
	}
	if string(csrs[nodecreds.KubeletClient]) != "csr" {
		return nodecreds.Bundle{}, fmt.Errorf("certificate requests %q", csrs)
	}
	f.signed = append(f.signed, name+"/"+ip.String())
	return nodecreds.Bundle{ServerCA: f.ca, Certs: map[string][]byte{nodecreds.KubeletClient: []byte("c")}}, nil
}
