package metricsserver

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/pki"
)

// testConfig is a complete configuration with real files (no apiserver:
// nothing is contacted before the server runs).
func testConfig(t *testing.T) Config {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	f := func(name string) string { return filepath.Join(dir, name) }
	ip := ownAddress(t)
	ca, err := pki.LoadOrCreateCA(f("ca.crt"), f("ca.key"), "test-ca", now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.EnsureLeaf(f("serving.crt"), f("serving.key"), pki.Leaf{CommonName: ServingName(), DNSNames: []string{ServingName()}, Server: true}, now); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.EnsureLeaf(f("client.crt"), f("client.key"), pki.Leaf{CommonName: "system:admin", Client: true}, now); err != nil {
		t.Fatal(err)
	}
	if err := kubeconfig.Write(f("kubeconfig"), 0o600, kubeconfig.Spec{Server: "https://127.0.0.1:1", CAFile: f("ca.crt"), CertFile: f("client.crt"), KeyFile: f("client.key")}); err != nil {
		t.Fatal(err)
	}
	return Config{
		Kubeconfig: f("kubeconfig"), BindAddress: ip, Port: freePort(t, ip),
		ServingCert: f("serving.crt"), ServingKey: f("serving.key"), ClientCA: f("ca.crt"),
		RequestHeader: RequestHeader{CAFile: f("ca.crt"), AllowedNames: []string{"system:auth-proxy"},
			UsernameHeaders: []string{"X-Remote-User"}, GroupHeaders: []string{"X-Remote-Group"}, ExtraHeaderPrefixes: []string{"X-Remote-Extra-"}},
		KubeletCA: f("ca.crt"), KubeletClientCert: f("client.crt"), KubeletClientKey: f("client.key"),
		MinTLSVersion: "VersionTLS12",
	}
}

// ownAddress is an address of this machine that is not loopback.
func ownAddress(t *testing.T) net.IP {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP
		}
	}
	t.Skip("no address but loopback to bind to")
	return nil
}

func freePort(t *testing.T, ip net.IP) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestNew(t *testing.T) {
	if _, err := New(testConfig(t)); err != nil {
		t.Fatal(err)
	}
}

func TestOptionsVerifyKubelets(t *testing.T) {
	c := testConfig(t)
	o := c.options()
	k := o.KubeletClient
	if k.InsecureKubeletTLS || k.DeprecatedCompletelyInsecureKubelet || k.KubeletCAFile != c.KubeletCA {
		t.Errorf("kubelet TLS: insecure %v, completely insecure %v, CA %q (want %q)", k.InsecureKubeletTLS, k.DeprecatedCompletelyInsecureKubelet, k.KubeletCAFile, c.KubeletCA)
	}
	if o.Features.EnableProfiling {
		t.Error("profiling on")
	}
	if !o.Authentication.SkipInClusterLookup || o.Authentication.RequestHeader.ClientCAFile != c.RequestHeader.CAFile {
		t.Errorf("request header: lookup skipped %v, CA %q", o.Authentication.SkipInClusterLookup, o.Authentication.RequestHeader.ClientCAFile)
	}
}

func TestBadConfig(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"loopback", func(c *Config) { c.BindAddress = net.ParseIP("127.0.0.1") }, "need the node's own address"},
		{"unspecified", func(c *Config) { c.BindAddress = net.ParseIP("0.0.0.0") }, "need the node's own address"},
		{"no kubelet CA", func(c *Config) { c.KubeletCA = "" }, "no kubelet CA given"},
		{"port", func(c *Config) { c.Port = 70000 }, "port 70000 out of range"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(t)
			tt.change(&c)
			_, err := New(c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one with %q", err, tt.want)
			}
		})
	}
}
