package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/bramble-pi/bramble/pkg/pki"
)

// fakeStore is a real (local) content store with a fixed image list.
type fakeStore struct {
	content.Store
	images []images.Image
	err    error
}

func (f *fakeStore) ListImages(context.Context) ([]images.Image, error) { return f.images, f.err }

// testImages holds what the store serves: busybox as an index with a
// manifest for amd64 (present) and one for arm64 (content absent), and
// another image whose layer busybox's name must not reach.
type testImages struct {
	index, manifest, config, layer, otherLayer, absent ocispec.Descriptor
	blobs                                              map[digest.Digest][]byte
}

func put(t *testing.T, cs content.Store, blobs map[digest.Digest][]byte, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(context.Background(), cs, d.Digest.String(), bytes.NewReader(data), d); err != nil {
		t.Fatal(err)
	}
	blobs[d.Digest] = data
	return d
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func manifestOf(t *testing.T, config ocispec.Descriptor, layers ...ocispec.Descriptor) []byte {
	return mustJSON(t, ocispec.Manifest{Versioned: specsVersion, MediaType: ocispec.MediaTypeImageManifest, Config: config, Layers: layers})
}

func newStore(t *testing.T) (*fakeStore, testImages) {
	t.Helper()
	cs, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ti := testImages{blobs: map[digest.Digest][]byte{}}
	// Larger than a chunk, so the chunked reads are exercised.
	layer := make([]byte, chunkSize*5/2)
	if _, err := rand.Read(layer); err != nil {
		t.Fatal(err)
	}
	ti.layer = put(t, cs, ti.blobs, ocispec.MediaTypeImageLayer, layer)
	ti.config = put(t, cs, ti.blobs, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`))
	ti.manifest = put(t, cs, ti.blobs, ocispec.MediaTypeImageManifest, manifestOf(t, ti.config, ti.layer))
	ti.manifest.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	absentData := manifestOf(t, ti.config)
	ti.absent = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(absentData),
		Size: int64(len(absentData)), Platform: &ocispec.Platform{OS: "linux", Architecture: "arm64"}}
	ti.index = put(t, cs, ti.blobs, ocispec.MediaTypeImageIndex, mustJSON(t, ocispec.Index{Versioned: specsVersion,
		MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{ti.manifest, ti.absent}}))

	ti.otherLayer = put(t, cs, ti.blobs, ocispec.MediaTypeImageLayer, []byte("another image's layer"))
	otherConfig := put(t, cs, ti.blobs, ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","other":1}`))
	other := put(t, cs, ti.blobs, ocispec.MediaTypeImageManifest, manifestOf(t, otherConfig, ti.otherLayer))

	return &fakeStore{Store: cs, images: []images.Image{
		{Name: "docker.io/library/busybox:1", Target: ti.index},
		{Name: "docker.io/library/busybox@" + ti.index.Digest.String(), Target: ti.index},
		{Name: "sha256:" + ti.config.Digest.Encoded(), Target: ti.index},
		{Name: "docker.io/bramble/other:1", Target: other},
	}}, ti
}

var specsVersion = specs.Versioned{SchemaVersion: 2}

// certs are client identities issued by the cluster's client CA (and one
// by a CA of another cluster).
type certs struct {
	pool                                 *x509.CertPool
	node, admin, proxy, serving, foreign tls.Certificate
}

func newCerts(t *testing.T) certs {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"), "test-client-ca", now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.LoadOrCreateCA(filepath.Join(dir, "other.crt"), filepath.Join(dir, "other.key"), "another-cluster", now)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *pki.Authority, leaf pki.Leaf) tls.Certificate {
		certPath, keyPath := filepath.Join(dir, "leaf.crt"), filepath.Join(dir, "leaf.key")
		_ = os.Remove(keyPath)
		if _, err := ca.EnsureLeaf(certPath, keyPath, leaf, now); err != nil {
			t.Fatal(err)
		}
		c, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	node := pki.Leaf{CommonName: "system:node:pi2", Organization: []string{"system:nodes"}, Client: true}
	c := certs{pool: x509.NewCertPool(),
		node:    issue(ca, node),
		admin:   issue(ca, pki.Leaf{CommonName: "admin", Organization: []string{"system:masters"}, Client: true}),
		proxy:   issue(ca, pki.Leaf{CommonName: "system:kube-proxy", Client: true}),
		serving: issue(ca, pki.Leaf{CommonName: "system:node:pi2", Organization: []string{"system:nodes"}, Server: true}),
		foreign: issue(other, node),
	}
	c.pool.AddCert(ca.Cert)
	return c
}

type fixture struct {
	t     *testing.T
	srv   *httptest.Server
	store *fakeStore
	imgs  testImages
	certs certs
}

func newFixture(t *testing.T) *fixture {
	store, imgs := newStore(t)
	cs := newCerts(t)
	srv := httptest.NewUnstartedServer(New(store, cs.pool, nil))
	// Like the apiserver: a client certificate is asked for, not verified
	// by TLS.
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &fixture{t: t, srv: srv, store: store, imgs: imgs, certs: cs}
}

// do sends a request as the holder of cert (nil: no certificate).
func (f *fixture) do(cert *tls.Certificate, method, path string, header ...string) (*http.Response, []byte) {
	f.t.Helper()
	tr := f.srv.Client().Transport.(*http.Transport).Clone()
	if cert != nil {
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(method, f.srv.URL+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp, body
}

func (f *fixture) node(method, path string, header ...string) (*http.Response, []byte) {
	f.t.Helper()
	return f.do(&f.certs.node, method, path, header...)
}

// errorCode is the code of an OCI error body.
func errorCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
		t.Fatalf("not an OCI error body: %q", body)
	}
	return e.Errors[0].Code
}

func TestRefusals(t *testing.T) {
	f := newFixture(t)
	path := "/v2/library/busybox/manifests/1?ns=docker.io"
	for _, tc := range []struct {
		name   string
		cert   *tls.Certificate
		status int
		code   string
	}{
		{"NoCertificate", nil, http.StatusUnauthorized, codeUnauthorized},
		{"AnotherClustersNode", &f.certs.foreign, http.StatusUnauthorized, codeUnauthorized},
		{"ServingCertificateOfANode", &f.certs.serving, http.StatusUnauthorized, codeUnauthorized},
		{"Admin", &f.certs.admin, http.StatusForbidden, codeDenied},
		{"KubeProxy", &f.certs.proxy, http.StatusForbidden, codeDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range []string{"/v2/", path, "/v2/library/busybox/blobs/" + f.imgs.layer.Digest.String()} {
				resp, body := f.do(tc.cert, http.MethodGet, p)
				if resp.StatusCode != tc.status || errorCode(t, body) != tc.code {
					t.Errorf("GET %s: %d %s, want %d %s", p, resp.StatusCode, body, tc.status, tc.code)
				}
				if bytes.Contains(body, f.imgs.blobs[f.imgs.index.Digest]) || resp.Header.Get("Docker-Content-Digest") != "" {
					t.Errorf("GET %s refused but gave content away", p)
				}
			}
		})
	}
	if resp, body := f.node(http.MethodGet, "/v2/"); resp.StatusCode != http.StatusOK || string(body) != "{}" ||
		resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Errorf("GET /v2/ as a node: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

func TestManifestByTag(t *testing.T) {
	f := newFixture(t)
	want := f.imgs.blobs[f.imgs.index.Digest]
	for _, path := range []string{
		"/v2/library/busybox/manifests/1?ns=docker.io", // containerd through a mirror
		"/v2/busybox/manifests/1?ns=docker.io",         // docker.io normalisation
		"/v2/busybox/manifests/1",                      // no ns: docker.io
		"/v2/docker.io/library/busybox/manifests/1",
	} {
		resp, body := f.node(http.MethodGet, path)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
			t.Errorf("GET %s: %d %.200s", path, resp.StatusCode, body)
			continue
		}
		checkHeaders(t, resp, ocispec.MediaTypeImageIndex, f.imgs.index)
	}
	resp, body := f.node(http.MethodHead, "/v2/library/busybox/manifests/1?ns=docker.io")
	if resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Errorf("HEAD: %d, %d bytes of body", resp.StatusCode, len(body))
	}
	checkHeaders(t, resp, ocispec.MediaTypeImageIndex, f.imgs.index)

	for _, tc := range []struct{ path, code string }{
		{"/v2/library/busybox/manifests/2?ns=docker.io", codeManifestUnknown},
		{"/v2/library/busybox/manifests/1?ns=ghcr.io", codeNameUnknown},
		{"/v2/library/nothing/manifests/1?ns=docker.io", codeNameUnknown},
		{"/v2/library/busy/manifests/1?ns=docker.io", codeNameUnknown},
	} {
		resp, body := f.node(http.MethodGet, tc.path)
		if resp.StatusCode != http.StatusNotFound || errorCode(t, body) != tc.code {
			t.Errorf("GET %s: %d %s, want 404 %s", tc.path, resp.StatusCode, body, tc.code)
		}
		if resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: error Content-Type %q", tc.path, resp.Header.Get("Content-Type"))
		}
		if resp, body := f.node(http.MethodHead, tc.path); resp.StatusCode != http.StatusNotFound || len(body) != 0 {
			t.Errorf("HEAD %s: %d, %d bytes", tc.path, resp.StatusCode, len(body))
		}
	}
	if resp, body := f.node(http.MethodGet, "/v2/Invalid..Name/manifests/1"); resp.StatusCode != http.StatusBadRequest || errorCode(t, body) != codeNameInvalid {
		t.Errorf("invalid name: %d %s", resp.StatusCode, body)
	}
}

func checkHeaders(t *testing.T, resp *http.Response, contentType string, d ocispec.Descriptor) {
	t.Helper()
	if got := resp.Header.Get("Content-Type"); got != contentType {
		t.Errorf("Content-Type %q, want %q", got, contentType)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != d.Digest.String() {
		t.Errorf("Docker-Content-Digest %q, want %s", got, d.Digest)
	}
	if got := resp.Header.Get("Content-Length"); got != strconv.FormatInt(d.Size, 10) {
		t.Errorf("Content-Length %q, want %d", got, d.Size)
	}
}

func TestManifestByDigest(t *testing.T) {
	f := newFixture(t)
	base := "/v2/library/busybox/manifests/"
	for _, d := range []ocispec.Descriptor{f.imgs.index, f.imgs.manifest} {
		resp, body := f.node(http.MethodGet, base+d.Digest.String()+"?ns=docker.io")
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, f.imgs.blobs[d.Digest]) {
			t.Errorf("GET manifest %s: %d %.200s", d.Digest, resp.StatusCode, body)
			continue
		}
		checkHeaders(t, resp, d.MediaType, d)
	}
	for _, tc := range []struct {
		what string
		d    digest.Digest
	}{
		{"another platform's manifest, absent here", f.imgs.absent.Digest},
		{"a config through /manifests/", f.imgs.config.Digest},
		{"unknown", digest.FromString("nothing")},
	} {
		resp, body := f.node(http.MethodGet, base+tc.d.String()+"?ns=docker.io")
		if resp.StatusCode != http.StatusNotFound || errorCode(t, body) != codeManifestUnknown {
			t.Errorf("%s: %d %s, want 404 MANIFEST_UNKNOWN", tc.what, resp.StatusCode, body)
		}
	}
}

func TestBlobs(t *testing.T) {
	f := newFixture(t)
	base := "/v2/library/busybox/blobs/"
	for _, d := range []ocispec.Descriptor{f.imgs.layer, f.imgs.config} {
		resp, body := f.node(http.MethodGet, base+d.Digest.String()+"?ns=docker.io")
		if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != d.Digest {
			t.Errorf("GET blob %s: %d, %d bytes", d.Digest, resp.StatusCode, len(body))
			continue
		}
		checkHeaders(t, resp, "application/octet-stream", d)
		resp, body = f.node(http.MethodHead, base+d.Digest.String()+"?ns=docker.io")
		if resp.StatusCode != http.StatusOK || len(body) != 0 {
			t.Errorf("HEAD blob: %d, %d bytes", resp.StatusCode, len(body))
		}
		checkHeaders(t, resp, "application/octet-stream", d)
	}
	// A range across a chunk boundary (containerd resumes with Range).
	from, to := int64(chunkSize-10), int64(chunkSize+20)
	resp, body := f.node(http.MethodGet, base+f.imgs.layer.Digest.String(), "Range", "bytes="+strconv.FormatInt(from, 10)+"-"+strconv.FormatInt(to, 10))
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, f.imgs.blobs[f.imgs.layer.Digest][from:to+1]) {
		t.Errorf("range request: %d, %d bytes", resp.StatusCode, len(body))
	}
	for _, tc := range []struct {
		what, path string
		status     int
		code       string
	}{
		{"another image's layer", base + f.imgs.otherLayer.Digest.String() + "?ns=docker.io", http.StatusNotFound, codeBlobUnknown},
		{"unknown digest", base + digest.FromString("x").String(), http.StatusNotFound, codeBlobUnknown},
		{"invalid digest", base + "sha256:abc", http.StatusBadRequest, codeDigestInvalid},
		{"a tag as blob", base + "latest", http.StatusBadRequest, codeDigestInvalid},
	} {
		resp, body := f.node(http.MethodGet, tc.path)
		if resp.StatusCode != tc.status || errorCode(t, body) != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.what, resp.StatusCode, body, tc.status, tc.code)
		}
	}
	// The other image's layer through its own name.
	resp, body = f.node(http.MethodGet, "/v2/bramble/other/blobs/"+f.imgs.otherLayer.Digest.String()+"?ns=docker.io")
	if resp.StatusCode != http.StatusOK || string(body) != "another image's layer" {
		t.Errorf("other image's layer by its name: %d %q", resp.StatusCode, body)
	}
}

// TestReadOnly: a node can do nothing but GET and HEAD content: no push,
// no delete, no catalog or tag listing.
func TestReadOnly(t *testing.T) {
	f := newFixture(t)
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		for _, p := range []string{"/v2/library/busybox/blobs/uploads/", "/v2/library/busybox/manifests/1",
			"/v2/library/busybox/blobs/" + f.imgs.layer.Digest.String()} {
			resp, body := f.node(m, p)
			if resp.StatusCode != http.StatusMethodNotAllowed || errorCode(t, body) != codeUnsupported {
				t.Errorf("%s %s: %d %s, want 405", m, p, resp.StatusCode, body)
			}
		}
	}
	for _, p := range []string{"/v2/_catalog", "/v2/library/busybox/tags/list", "/v2/library/busybox/blobs/uploads/",
		"/v2/library/busybox/referrers/" + f.imgs.index.Digest.String()} {
		resp, body := f.node(http.MethodGet, p)
		if resp.StatusCode != http.StatusNotFound || errorCode(t, body) != codeUnsupported {
			t.Errorf("GET %s: %d %s, want 404", p, resp.StatusCode, body)
		}
	}
}

func TestContainerdUnavailable(t *testing.T) {
	f := newFixture(t)
	f.store.err = errors.New("connection refused")
	resp, body := f.node(http.MethodGet, "/v2/library/busybox/manifests/1?ns=docker.io")
	if resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, body) != codeUnavailable {
		t.Errorf("%d %s, want 503", resp.StatusCode, body)
	}
}

func TestSplitPath(t *testing.T) {
	for _, tc := range []struct{ in, name, kind, ref string }{
		{"library/busybox/manifests/1", "library/busybox", "manifests", "1"},
		{"a/b/c/blobs/sha256:00", "a/b/c", "blobs", "sha256:00"},
		{"x/manifests/blobs/sha256:1", "x/manifests", "blobs", "sha256:1"},
		{"x/manifests/", "", "", ""},
		{"manifests/1", "", "", ""},
		{"x/tags/list", "", "", ""},
	} {
		name, kind, ref, _ := splitPath(tc.in)
		if name != tc.name || kind != tc.kind || ref != tc.ref {
			t.Errorf("splitPath(%q) = %q %q %q", tc.in, name, kind, ref)
		}
	}
}
