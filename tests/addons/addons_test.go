// Package addons tests a fresh server with the air-gap images: CoreDNS,
// Traefik and the R Plumber API come up by themselves and answer, an
// Ingress with TLS is served by Traefik with its Secret's certificate, and
// metrics-server's figures let a HorizontalPodAutoscaler scale the API.
package addons

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

func TestBundledAddons(t *testing.T) {
	testutil.RequireRoot(t)
	root := testutil.RepoRoot(t)
	airgap := filepath.Join(root, "dist", "bramble-airgap-images-"+testutil.Arch()+".tar.zst")
	busybox := filepath.Join(root, "dist", "images", testutil.Arch(), "busybox.tar")
	s := testutil.NewServer(t)
	testutil.CleanupNode(t, s)
	images := filepath.Join(s.DataDir, "agent", "images")
	if err := os.MkdirAll(images, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{airgap, busybox} {
		if err := os.Symlink(f, filepath.Join(images, filepath.Base(f))); err != nil {
			t.Fatal(err)
		}
	}
	begin := time.Now()
	s.Start()
	s.WaitReady(3 * time.Minute)

	base := "http://127.0.0.1"
	testutil.WaitFor(t, 4*time.Minute, "odd through the ingress", func() bool {
		code, body := get(base + "/parity?int=15")
		return code == 200 && strings.TrimSpace(body) == "odd"
	})
	t.Logf("first odd through Traefik %.1f s after start", time.Since(begin).Seconds())

	checkIngressTLS(t, s)

	if code, body := get(base + "/parity?int=4"); strings.TrimSpace(body) != "even" {
		t.Errorf("/parity?int=4: %d %q", code, body)
	}
	if code, body := get(base + "/parity?int=abc"); code != 400 {
		t.Errorf("/parity?int=abc: %d %q, want 400", code, body)
	}

	// /wait takes ~5 s while /parity keeps answering.
	var waitTook time.Duration
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		b := time.Now()
		code, body := get(base + "/wait")
		waitTook = time.Since(b)
		if code != 200 || !strings.Contains(body, "time") {
			t.Errorf("/wait: %d %q", code, body)
		}
	}()
	time.Sleep(500 * time.Millisecond)
	b := time.Now()
	if _, body := get(base + "/parity?int=7"); strings.TrimSpace(body) != "odd" {
		t.Errorf("/parity during /wait: %q", body)
	}
	parityTook := time.Since(b)
	wg.Wait()
	t.Logf("/wait took %s; /parity meanwhile %s", waitTook, parityTook)
	if waitTook < 4*time.Second || parityTook > 2*time.Second {
		t.Errorf("/wait %s (want ~5 s), concurrent /parity %s (want well under /wait)", waitTook, parityTook)
	}

	// A pod resolves the Plumber service through CoreDNS.
	s.MustKubectl("run", "dns", "--image=docker.io/bramble/busybox:test", "--image-pull-policy=Never", "--restart=Never",
		"--command", "--", "nslookup", "plumber-api.plumber.svc.cluster.local")
	testutil.WaitFor(t, 2*time.Minute, "DNS lookup pod finished", func() bool {
		out, _ := s.Kubectl("get", "pod", "dns", "-o", "jsonpath={.status.phase}")
		return out == "Succeeded" || out == "Failed"
	})
	svcIP := s.MustKubectl("-n", "plumber", "get", "service", "plumber-api", "-o", "jsonpath={.spec.clusterIP}")
	if out := s.MustKubectl("logs", "dns"); !strings.Contains(out, svcIP) {
		t.Errorf("nslookup did not answer %s:\n%s", svcIP, out)
	}

	// POST /fail to one pod: liveness restarts it; the Service keeps answering.
	pod := s.MustKubectl("-n", "plumber", "get", "pods", "-l", "app.kubernetes.io/name=plumber-api", "-o", "jsonpath={.items[0].metadata.name}")
	podIP := s.MustKubectl("-n", "plumber", "get", "pod", pod, "-o", "jsonpath={.status.podIP}")
	if code, _ := post("http://" + podIP + ":8000/fail"); code != 200 {
		t.Errorf("POST /fail: %d", code)
	}
	failures := loop(t, base+"/parity?int=3", func() {
		testutil.WaitFor(t, 90*time.Second, "failed pod restarted", func() bool {
			rc, _ := s.Kubectl("-n", "plumber", "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].restartCount}")
			return rc != "" && rc != "0"
		})
	})
	t.Logf("requests failed while a pod was restarted by its liveness probe: %d", failures)

	// rollout restart under load: no failed request.
	testutil.WaitFor(t, 2*time.Minute, "all replicas ready", func() bool {
		out, _ := s.Kubectl("-n", "plumber", "get", "deployment", "plumber-api", "-o", "jsonpath={.status.readyReplicas}")
		return out == "3"
	})
	failures = loop(t, base+"/parity?int=3", func() {
		s.MustKubectl("-n", "plumber", "rollout", "restart", "deployment/plumber-api")
		s.MustKubectl("-n", "plumber", "rollout", "status", "deployment/plumber-api", "--timeout=4m")
	})
	if failures > 0 {
		t.Errorf("%d requests failed during rollout restart, want 0", failures)
	}

	// metrics-server: kubectl top for the node and every add-on's pods, and
	// a HorizontalPodAutoscaler on CPU.
	testutil.WaitFor(t, 2*time.Minute, "kubectl top pods -A lists the Plumber API", func() bool {
		out, err := s.Kubectl("top", "pods", "-A", "--no-headers")
		return err == nil && strings.Contains(out, "plumber-api-")
	})
	t.Run("HPAScalesPlumberAPI", func(t *testing.T) { checkHPA(t, s) })
	s.Stop(15 * time.Second)
}

// loop sends GETs to url until during returns and counts the failures.
func loop(t *testing.T, url string, during func()) int {
	t.Helper()
	var failed, sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			sent.Add(1)
			if code, body := get(url); code != 200 || strings.TrimSpace(body) != "odd" {
				failed.Add(1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	during()
	close(stop)
	<-done
	t.Logf("%d requests sent, %d failed", sent.Load(), failed.Load())
	return int(failed.Load())
}

var get = testutil.Get

func post(url string) (int, string) {
	resp, err := testutil.HTTPClient.Post(url, "text/plain", nil)
	if err != nil {
		return 0, fmt.Sprint(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const tlsHost = "secure.bramble.test"

const tlsIngress = `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: plumber-tls
  namespace: plumber
spec:
  ingressClassName: traefik
  tls:
    - hosts: [` + tlsHost + `]
      secretName: plumber-tls
  rules:
    - host: ` + tlsHost + `
      http:
        paths:
          - path: /parity
            pathType: Prefix
            backend:
              service:
                name: plumber-api
                port:
                  number: 8000
`

// checkIngressTLS: an Ingress with TLS is served on :443 with the
// certificate of the Secret it names (Traefik reads that Secret through
// bramble's narrowed view), and Traefik's service account sees no other
// Secret.
func checkIngressTLS(t *testing.T, s *testutil.Server) {
	t.Helper()
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t, tlsHost)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for f, data := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.MustKubectl("-n", "plumber", "create", "secret", "tls", "plumber-tls", "--cert", certFile, "--key", keyFile)
	s.MustKubectl("-n", "plumber", "create", "secret", "generic", "unrelated", "--from-literal=password=x")
	ingress := filepath.Join(dir, "ingress.yaml")
	if err := os.WriteFile(ingress, []byte(tlsIngress), 0o600); err != nil {
		t.Fatal(err)
	}
	s.MustKubectl("apply", "-f", ingress)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		// Only the certificate from the Secret verifies (not Traefik's default one).
		TLSClientConfig: &tls.Config{ServerName: tlsHost, RootCAs: pool, MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:443")
		},
	}}
	var last string
	testutil.WaitFor(t, 90*time.Second, "HTTPS through Traefik with the Ingress's certificate", func() bool {
		resp, err := client.Get("https://" + tlsHost + "/parity?int=15")
		if err != nil {
			last = err.Error()
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		last = fmt.Sprintf("%d %q", resp.StatusCode, b)
		return resp.StatusCode == 200 && strings.TrimSpace(string(b)) == "odd"
	})
	t.Logf("HTTPS through Traefik: %s", last)
	out := s.MustKubectl("--as", "system:serviceaccount:kube-system:traefik", "get", "secrets", "-A",
		"-o", `jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {end}`)
	if strings.TrimSpace(out) != "plumber/plumber-tls" {
		t.Errorf("Traefik's service account sees Secrets %q, want only plumber/plumber-tls", out)
	}
	if out, err := s.Kubectl("--as", "system:serviceaccount:kube-system:traefik", "-n", "plumber", "get", "secret", "unrelated"); err == nil || !strings.Contains(out, "Forbidden") {
		t.Errorf("Traefik's get of an unreferenced Secret: %v %s", err, out)
	}
}

// selfSigned returns a self-signed certificate for host and its key, PEM.
func selfSigned(t *testing.T, host string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}
