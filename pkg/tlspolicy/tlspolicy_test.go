package tlspolicy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	cliflag "k8s.io/component-base/cli/flag"

	"github.com/bramble-pi/bramble/pkg/tlspolicy"
	"github.com/bramble-pi/bramble/tests/testutil"
)

// The Kubernetes components accept the policy as bramble passes it.
func TestNamesParseAsKubernetesFlags(t *testing.T) {
	ids, err := cliflag.TLSCipherSuites(tlspolicy.CipherSuiteNames())
	if err != nil {
		t.Fatalf("--tls-cipher-suites=%s: %v", strings.Join(tlspolicy.CipherSuiteNames(), ","), err)
	}
	if !slices.Equal(ids, tlspolicy.CipherSuites()) {
		t.Errorf("names parse to %v, want %v", ids, tlspolicy.CipherSuites())
	}
	if v, err := cliflag.TLSVersion(tlspolicy.MinVersionName); err != nil || v != tlspolicy.MinVersion {
		t.Errorf("--tls-min-version=%s: %v, %v", tlspolicy.MinVersionName, v, err)
	}
}

// Every suite is one Go counts as secure, ECDHE with an AEAD, for TLS 1.2.
func TestSuitesAreECDHEWithAEAD(t *testing.T) {
	secure := map[uint16]*tls.CipherSuite{}
	for _, s := range tls.CipherSuites() {
		secure[s.ID] = s
	}
	for _, id := range tlspolicy.CipherSuites() {
		s, ok := secure[id]
		name := tls.CipherSuiteName(id)
		switch {
		case !ok:
			t.Errorf("%s is not among Go's secure suites", name)
		case !strings.HasPrefix(name, "TLS_ECDHE_"):
			t.Errorf("%s: not ECDHE", name)
		case !strings.Contains(name, "_GCM_") && !strings.Contains(name, "_CHACHA20_POLY1305_"):
			t.Errorf("%s: not AES-GCM or ChaCha20-Poly1305", name)
		case !slices.Contains(s.SupportedVersions, tls.VersionTLS12):
			t.Errorf("%s: not a TLS 1.2 suite", name)
		}
	}
}

// tb records the failures of a check that is expected to fail.
type tb struct {
	testing.TB
	errors []string
}

func (r *tb) Helper()                      {}
func (r *tb) Errorf(f string, args ...any) { r.errors = append(r.errors, fmt.Sprintf(f, args...)) }

// A server with the policy refuses the weak clients tests/testutil tries
// on running nodes, with an RSA and with an ECDSA certificate (bramble's);
// Go's defaults accept some of them, so the check has teeth.
func TestWeakClientsRefused(t *testing.T) {
	ecdsaCert := selfSigned(t)
	for _, tc := range []struct {
		name string
		cert *tls.Certificate // nil: httptest's RSA certificate
	}{{"RSA certificate", nil}, {"ECDSA certificate", &ecdsaCert}} {
		t.Run(tc.name, func(t *testing.T) {
			serve := func(c *tls.Config) string {
				srv := httptest.NewUnstartedServer(http.NotFoundHandler())
				srv.TLS = c
				srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
				if tc.cert != nil {
					srv.TLS.Certificates = []tls.Certificate{*tc.cert}
				}
				srv.StartTLS()
				t.Cleanup(srv.Close)
				return srv.Listener.Addr().String()
			}
			testutil.CheckTLSPolicy(t, serve(tlspolicy.Apply(&tls.Config{})))

			r := &tb{TB: t}
			testutil.CheckTLSPolicy(r, serve(&tls.Config{}))
			if len(r.errors) == 0 {
				t.Error("a server with Go's default settings passes the check")
			}
			for _, e := range r.errors {
				if !strings.Contains(e, "a weak client") {
					t.Errorf("Go's defaults: %s", e)
				}
			}
			t.Logf("Go's defaults accept: %s", strings.Join(r.errors, "; "))
		})
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
