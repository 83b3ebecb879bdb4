package server

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/pkg/nodecreds"
)

// A joining node's names: the apiserver's, localhost, loopback and the
// cluster's networks are refused; ordinary ones are not.
func TestReserved(t *testing.T) {
	cp := testControlPlane(t, func(c *Config) { c.TLSSANs = []string{"pi.example", "192.168.1.200"} })
	creds, err := EnsureCredentials(cp.cfg, cp.paths, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cp.creds = creds
	ok := net.ParseIP("192.168.1.11")
	for _, tc := range []struct {
		name string
		ip   string
		want string
	}{
		{"pi2", "192.168.1.11", ""},
		{"kubernetes.default.svc.cluster.local", "192.168.1.11", "name of the apiserver"},
		{"kubernetes", "192.168.1.11", "name of the apiserver"},
		{"pi.example", "192.168.1.11", "name of the apiserver"},
		{"localhost", "192.168.1.11", "localhost"},
		{"evil.default.svc", "192.168.1.11", "cluster service name"},
		{"x.cluster.local", "192.168.1.11", "cluster service name"},
		{"pi2", "10.43.0.1", "service network"},
		{"pi2", "10.42.3.4", "pod network"},
		{"pi2", "127.0.0.1", "loopback"},
		{"pi2", "192.168.1.10", "address of the apiserver"},
		{"pi2", "192.168.1.200", "address of the apiserver"},
	} {
		ip := net.ParseIP(tc.ip)
		if ip == nil {
			ip = ok
		}
		err := cp.Reserved(tc.name, ip)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Reserved(%s, %s) = %v, want %q", tc.name, tc.ip, err, tc.want)
		}
	}
}

// SignNode signs the node's own keys, with names from the node's name and
// address (never from the requests), serving certificates from the
// kubelet-serving CA, which is not the CA clients trust for the apiserver.
func TestSignNode(t *testing.T) {
	cp := testControlPlane(t, nil)
	creds, err := EnsureCredentials(cp.cfg, cp.paths, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cp.creds = creds
	node := nodecreds.In(t.TempDir())
	csrs, err := node.CSRs("kubernetes") // the subject asked for is ignored
	if err != nil {
		t.Fatal(err)
	}
	b, err := cp.SignNode("pi2", net.ParseIP("192.168.1.11"), csrs)
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Write(b); err != nil {
		t.Fatalf("the node's own keys do not match the certificates: %v", err)
	}
	pool := func(path string) *x509.CertPool {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		p := x509.NewCertPool()
		p.AppendCertsFromPEM(data)
		return p
	}
	serving := firstCert(t, node.ServingCert)
	if serving.Subject.CommonName != "pi2" || strings.Join(serving.DNSNames, ",") != "pi2,localhost" {
		t.Errorf("serving certificate for %q %v", serving.Subject.CommonName, serving.DNSNames)
	}
	if _, err := serving.Verify(x509.VerifyOptions{Roots: pool(creds.ServerCA)}); err == nil {
		t.Error("a kubelet serving certificate verifies against the server CA: it could pass for the apiserver")
	}
	if _, err := serving.Verify(x509.VerifyOptions{Roots: pool(creds.KubeletServingCA), DNSName: "pi2"}); err != nil {
		t.Errorf("serving certificate not from the kubelet-serving CA: %v", err)
	}
	flannel := firstCert(t, node.Cert(nodecreds.FlannelClient))
	if flannel.Subject.CommonName != "bramble:flannel:pi2" || strings.Join(flannel.Subject.Organization, ",") != nodecreds.FlannelGroup {
		t.Errorf("flannel identity %q %v", flannel.Subject.CommonName, flannel.Subject.Organization)
	}
	delete(csrs, nodecreds.KubeProxyClient)
	if _, err := cp.SignNode("pi2", net.ParseIP("192.168.1.11"), csrs); err == nil {
		t.Error("signed without a request for every identity")
	}
	csrs[nodecreds.KubeProxyClient] = []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
	if _, err := cp.SignNode("pi2", net.ParseIP("192.168.1.11"), csrs); err == nil {
		t.Error("signed a malformed request")
	}
}

func firstCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
