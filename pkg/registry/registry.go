// Package registry serves the images of the server node's containerd to the
// cluster's nodes: a read-only OCI distribution endpoint (GET and HEAD of
// /v2/, /v2/<name>/manifests/<tag or digest> and /v2/<name>/blobs/<digest>)
// that the agents' containerd uses as a mirror of every registry. Nothing can
// be pushed, listed (no catalog, no tag lists) or deleted.
//
// Only nodes may pull: a request must carry a TLS client certificate signed
// by the cluster's client CA whose subject is a node (O=system:nodes,
// CN=system:node:<name>), the kubelet's client certificate.
//
// containerd, pulling through a mirror, names the registry the image comes
// from in the query (`?ns=docker.io`): the image looked up is <ns>/<name>,
// normalised like a docker reference (docker.io/busybox is
// docker.io/library/busybox). Without ns, the name alone is normalised.
// A manifest or blob is served only when an image of the requested
// repository leads to it.
package registry

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Prefix is the path the handler serves below.
const Prefix = "/v2/"

// The identity a client certificate must carry.
const (
	nodesGroup = "system:nodes"
	nodePrefix = "system:node:"
)

// Store is what the registry reads: the image records and the content of
// one containerd namespace.
type Store interface {
	ListImages(ctx context.Context) ([]images.Image, error)
	content.Provider
}

// Handler is the registry. Create it with New.
type Handler struct {
	store    Store
	clientCA *x509.CertPool
	log      *slog.Logger
	now      func() time.Time

	mu sync.Mutex
	// walked caches, by an image's target digest, the descriptors its
	// content leads to (content is immutable; only complete walks are kept).
	walked map[digest.Digest]map[digest.Digest]ocispec.Descriptor
}

// New returns a registry serving store to clients whose certificate
// verifies against clientCA and names a node.
func New(store Store, clientCA *x509.CertPool, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{store: store, clientCA: clientCA, log: log, now: time.Now,
		walked: map[digest.Digest]map[digest.Digest]ocispec.Descriptor{}}
}

// Error codes of the distribution spec used here.
const (
	codeUnauthorized    = "UNAUTHORIZED"
	codeDenied          = "DENIED"
	codeUnsupported     = "UNSUPPORTED"
	codeNameInvalid     = "NAME_INVALID"
	codeNameUnknown     = "NAME_UNKNOWN"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeUnavailable     = "UNAVAILABLE"
)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	node, status, msg := h.authorize(r)
	if status != 0 {
		code := codeUnauthorized
		if status == http.StatusForbidden {
			code = codeDenied
		}
		h.log.Warn("image pull refused", "from", r.RemoteAddr, "path", r.URL.Path, "reason", msg)
		writeError(w, r, status, code, msg)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, r, http.StatusMethodNotAllowed, codeUnsupported, "this registry is read-only: only GET and HEAD")
		return
	}
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	rest := strings.TrimPrefix(r.URL.Path, Prefix)
	if rest == "" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, "{}")
		}
		return
	}
	name, kind, ref, ok := splitPath(rest)
	if !ok {
		writeError(w, r, http.StatusNotFound, codeUnsupported, "only manifests and blobs are served")
		return
	}
	repo, err := repository(r.URL.Query().Get("ns"), name)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, codeNameInvalid, err.Error())
		return
	}
	ctx := r.Context()
	imgs, err := h.repositoryImages(ctx, repo)
	if err != nil {
		h.log.Error("list images", "err", err)
		writeError(w, r, http.StatusServiceUnavailable, codeUnavailable, "the server's containerd is not available")
		return
	}
	if len(imgs) == 0 {
		writeError(w, r, http.StatusNotFound, codeNameUnknown, fmt.Sprintf("no image %s on the server", repo))
		return
	}
	unknown := codeBlobUnknown
	if kind == "manifests" {
		unknown = codeManifestUnknown
	}
	desc, err := h.find(ctx, imgs, kind, ref)
	switch {
	case errors.Is(err, errInvalidDigest):
		writeError(w, r, http.StatusBadRequest, codeDigestInvalid, err.Error())
		return
	case errdefs.IsNotFound(err):
		writeError(w, r, http.StatusNotFound, unknown, fmt.Sprintf("%s: %s not found", repo, ref))
		return
	case err != nil:
		h.log.Error("look up image content", "image", repo, "ref", ref, "err", err)
		writeError(w, r, http.StatusServiceUnavailable, codeUnavailable, "the server's containerd is not available")
		return
	}
	if kind == "manifests" && !strings.HasPrefix(ref, "sha256:") {
		h.log.Debug("image resolved", "node", node, "image", repo.String()+":"+ref, "digest", desc.Digest)
	}
	h.serve(w, r, desc, kind, unknown)
}

// authorize checks the client certificate: signed by the client CA and
// naming a node. It returns the node's name, or the HTTP status and reason
// of a refusal.
func (h *Handler) authorize(r *http.Request) (string, int, string) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", http.StatusUnauthorized, "a node's client certificate is required"
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: h.clientCA, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: h.now()})
	if err != nil {
		return "", http.StatusUnauthorized, "the client certificate is not one of this cluster's: " + err.Error()
	}
	node, isNode := strings.CutPrefix(leaf.Subject.CommonName, nodePrefix)
	if !isNode || node == "" || !slices.Contains(leaf.Subject.Organization, nodesGroup) {
		return "", http.StatusForbidden, fmt.Sprintf("only nodes may pull images; %q is not a node", leaf.Subject.CommonName)
	}
	return node, 0, ""
}

// splitPath splits "<name>/manifests/<ref>" or "<name>/blobs/<digest>".
func splitPath(p string) (name, kind, ref string, ok bool) {
	for _, k := range []string{"manifests", "blobs"} {
		if i := strings.LastIndex(p, "/"+k+"/"); i > 0 {
			name, ref = p[:i], p[i+len(k)+2:]
			if ref != "" && !strings.Contains(ref, "/") {
				return name, k, ref, true
			}
		}
	}
	return "", "", "", false
}

// repository is the image repository a request names: <ns>/<name>,
// normalised (docker.io/busybox is docker.io/library/busybox).
func repository(ns, name string) (reference.Named, error) {
	full := name
	if ns != "" {
		full = ns + "/" + name
	}
	repo, err := reference.ParseNormalizedNamed(full)
	if err != nil {
		return nil, fmt.Errorf("invalid repository name %q: %w", full, err)
	}
	if !reference.IsNameOnly(repo) {
		return nil, fmt.Errorf("invalid repository name %q: has a tag or digest", full)
	}
	return repo, nil
}

// repositoryImages are the images of repo (any tag or digest).
func (h *Handler) repositoryImages(ctx context.Context, repo reference.Named) ([]images.Image, error) {
	all, err := h.store.ListImages(ctx)
	if err != nil {
		return nil, err
	}
	var out []images.Image
	for _, img := range all {
		named, err := reference.ParseNormalizedNamed(img.Name)
		if err == nil && named.Name() == repo.Name() {
			out = append(out, img)
		}
	}
	return out, nil
}

var errInvalidDigest = errors.New("invalid digest")

// find is the descriptor of a manifest (by tag or digest) or a blob (by
// digest) of the repository's images; errdefs.ErrNotFound when they have
// none.
func (h *Handler) find(ctx context.Context, imgs []images.Image, kind, ref string) (ocispec.Descriptor, error) {
	if kind == "manifests" && !strings.Contains(ref, ":") {
		for _, img := range imgs {
			named, err := reference.ParseNormalizedNamed(img.Name)
			if tagged, ok := named.(reference.Tagged); err == nil && ok && tagged.Tag() == ref {
				return img.Target, nil
			}
		}
		return ocispec.Descriptor{}, errdefs.ErrNotFound
	}
	dgst, err := digest.Parse(ref)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%w %q: %w", errInvalidDigest, ref, err)
	}
	for _, img := range imgs {
		set, err := h.reachable(ctx, img.Target)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		if d, ok := set[dgst]; ok {
			if kind == "manifests" && !images.IsManifestType(d.MediaType) && !images.IsIndexType(d.MediaType) {
				continue
			}
			return d, nil
		}
	}
	return ocispec.Descriptor{}, errdefs.ErrNotFound
}

// reachable is every descriptor target leads to (itself, the manifests of
// an index, configs, layers). Content missing here (another platform's
// manifest) ends that branch.
func (h *Handler) reachable(ctx context.Context, target ocispec.Descriptor) (map[digest.Digest]ocispec.Descriptor, error) {
	h.mu.Lock()
	set, ok := h.walked[target.Digest]
	h.mu.Unlock()
	if ok {
		return set, nil
	}
	set = map[digest.Digest]ocispec.Descriptor{}
	complete := true
	queue := []ocispec.Descriptor{target}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		if _, seen := set[d.Digest]; seen {
			continue
		}
		set[d.Digest] = d
		children, err := images.Children(ctx, h.store, d)
		if errdefs.IsNotFound(err) {
			complete = false
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", d.Digest, err)
		}
		queue = append(queue, children...)
	}
	if complete {
		h.mu.Lock()
		if len(h.walked) > 512 {
			clear(h.walked)
		}
		h.walked[target.Digest] = set
		h.mu.Unlock()
	}
	return set, nil
}

// serve writes the content of desc (HEAD: only the headers; Range works).
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, desc ocispec.Descriptor, kind, unknown string) {
	ra, err := h.store.ReaderAt(r.Context(), desc)
	if errdefs.IsNotFound(err) {
		writeError(w, r, http.StatusNotFound, unknown, fmt.Sprintf("%s is not on the server", desc.Digest))
		return
	}
	if err != nil {
		h.log.Error("read content", "digest", desc.Digest, "err", err)
		writeError(w, r, http.StatusServiceUnavailable, codeUnavailable, "the server's containerd is not available")
		return
	}
	defer ra.Close()
	contentType := "application/octet-stream"
	if kind == "manifests" {
		contentType = desc.MediaType
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Docker-Content-Digest", desc.Digest.String())
	w.Header().Set("Etag", `"`+desc.Digest.String()+`"`)
	http.ServeContent(w, r, "", time.Time{}, newChunkedReader(ra))
}

// writeError answers with the distribution spec's error body.
func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	body, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
