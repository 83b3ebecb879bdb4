package join

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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
	var issued []string
	issue := func(name string, ip net.IP) (nodecreds.Bundle, error) {
		if name == "broken" {
			return nodecreds.Bundle{}, errors.New("signing failed")
		}
		issued = append(issued, name+"/"+ip.String())
		return nodecreds.Bundle{ServerCA: ca, Certs: map[string]nodecreds.PEM{nodecreds.KubeletClient: {Cert: []byte("c"), Key: []byte("k")}}}, nil
	}
	s := NewServer(ca, cfg, []token.Token{serverTok, agentTok, {User: "unused"}}, "pi1", issue, slog.New(slog.DiscardHandler))
	apiserver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "apiserver:"+r.URL.Path) })
	ts := httptest.NewServer(s.Wrap(apiserver))
	defer ts.Close()

	cs := fake.NewClientset()
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
			body: `{"nodeName":"` + node + `","nodeIP":"` + ip + `"}`, wantCode: code, wantBody: body}
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
		join("issue fails", "node", agentTok.Secret, pw, "broken", "10.0.0.4", 500, "could not issue"),
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
	if want := []string{"pi2/10.0.0.2", "pi2/10.0.0.2", "pi3/10.0.0.3"}; strings.Join(issued, ",") != strings.Join(want, ",") {
		t.Errorf("credentials issued for %v, want %v", issued, want)
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
