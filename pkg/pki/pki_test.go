package pki

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func readLeaf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestCAAndLeafLifecycle(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, err := LoadOrCreateCA(filepath.Join(dir, "tls", "ca.crt"), filepath.Join(dir, "tls", "ca.key"), "test-ca", now)
	if err != nil {
		t.Fatal(err)
	}
	if got := ca.Cert.NotAfter.Sub(now); got < CALifetime-2*time.Hour {
		t.Fatalf("CA lifetime %s", got)
	}
	for _, f := range []string{"ca.crt", "ca.key"} {
		st, _ := os.Stat(filepath.Join(dir, "tls", f))
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", f, st.Mode().Perm())
		}
	}
	if st, _ := os.Stat(filepath.Join(dir, "tls")); st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v", st.Mode().Perm())
	}
	again, err := LoadOrCreateCA(filepath.Join(dir, "tls", "ca.crt"), filepath.Join(dir, "tls", "ca.key"), "test-ca", now)
	if err != nil || !again.Cert.Equal(ca.Cert) {
		t.Fatalf("CA not reused: %v", err)
	}

	leaf := Leaf{CommonName: "kube-apiserver", DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true}
	crt, key := filepath.Join(dir, "tls", "a.crt"), filepath.Join(dir, "tls", "a.key")
	if wrote, err := ca.EnsureLeaf(crt, key, leaf, now); err != nil || !wrote {
		t.Fatalf("first EnsureLeaf: %v %v", wrote, err)
	}
	first := readLeaf(t, crt)
	if err := first.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatal(err)
	}
	if wrote, _ := ca.EnsureLeaf(crt, key, leaf, now.Add(200*24*time.Hour)); wrote {
		t.Fatal("renewed with 165 days left")
	}
	if wrote, _ := ca.EnsureLeaf(crt, key, leaf, now.Add(250*24*time.Hour)); !wrote {
		t.Fatal("not renewed with 115 days left")
	}
	renewed := readLeaf(t, crt)
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("same certificate after renewal")
	}
	leaf.DNSNames = append(leaf.DNSNames, "pi1.local")
	if wrote, _ := ca.EnsureLeaf(crt, key, leaf, now); !wrote {
		t.Fatal("not reissued after a new SAN")
	}
	if got := readLeaf(t, crt).DNSNames; len(got) != 2 {
		t.Fatalf("SANs %v", got)
	}
}
