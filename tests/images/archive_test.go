// Package images tests the bundled container images built by mk/images.mk.
//
// The tests expect `make images test-images airgap` to have run: they read
// dist/images/<arch>/*.tar and dist/bramble-airgap-images-<arch>.tar.zst from
// the repository root. <arch> is the host's GOARCH unless BRAMBLE_TEST_ARCH
// names another one (amd64, arm64, arm), whose binaries then run under
// qemu-user through binfmt_misc (`make images-deps ARCH=...` registers it).
// Running images needs root (chroot, namespaces, mounts); those tests skip
// otherwise. All network traffic stays on 127.0.0.1.
package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// ------------------------------------------------------------------ setup

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// repoRoot finds the checkout's root: the directory whose go.mod declares the
// bramble module.
func repoRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err == nil && bytes.Contains(data, []byte("module github.com/bramble-pi/bramble\n")) {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = errors.New("repository root (go.mod of github.com/bramble-pi/bramble) not found")
				return
			}
			dir = parent
		}
	})
	if rootErr != nil {
		t.Fatal(rootErr)
	}
	return rootDir
}

// testArch is the arch whose images are tested.
func testArch() string {
	if a := os.Getenv("BRAMBLE_TEST_ARCH"); a != "" {
		return a
	}
	return runtime.GOARCH
}

func emulated() bool { return testArch() != runtime.GOARCH }

// imagesEnv reads images/images.env (KEY=value lines): names and tags.
func imagesEnv(t testing.TB) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "images", "images.env"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return env
}

// imageRef is the pinned, fully qualified name of a bundled image.
func imageRef(t testing.TB, name string) string {
	t.Helper()
	env := imagesEnv(t)
	tags := map[string]string{
		"coredns":     env["COREDNS_TAG"],
		"traefik":     env["TRAEFIK_TAG"],
		"plumber-api": env["PLUMBER_TAG"],
		"pause":       env["PAUSE_TAG"],
		"busybox":     env["BUSYBOX_TAG"],
	}
	tag := tags[name]
	if tag == "" || env["IMAGE_REPO"] == "" {
		t.Fatalf("no tag for image %s in images/images.env", name)
	}
	return env["IMAGE_REPO"] + "/" + name + ":" + tag
}

var bundledImages = []string{"coredns", "traefik", "plumber-api", "pause"}

func artifact(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "dist", rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s missing: run `make images test-images airgap ARCH=%s` first (%v)", p, testArch(), err)
	}
	return p
}

func imageArchive(t testing.TB, name string) string {
	return artifact(t, filepath.Join("images", testArch(), name+".tar"))
}

func needRoot(t testing.TB) {
	t.Helper()
	testutil.NeedRoot(t, "chroot, namespaces, mounts")
}

// ------------------------------------------------------------------ archives

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		Variant      string `json:"variant"`
	} `json:"platform"`
}

type ociIndex struct {
	SchemaVersion int          `json:"schemaVersion"`
	Manifests     []descriptor `json:"manifests"`
}

type ociManifest struct {
	Config descriptor   `json:"config"`
	Layers []descriptor `json:"layers"`
}

type imageConfig struct {
	Architecture string `json:"architecture"`
	Variant      string `json:"variant"`
	OS           string `json:"os"`
	Config       struct {
		User         string              `json:"User"`
		Env          []string            `json:"Env"`
		Entrypoint   []string            `json:"Entrypoint"`
		Cmd          []string            `json:"Cmd"`
		WorkingDir   string              `json:"WorkingDir"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts"`
	} `json:"config"`
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// archive is the table of contents of an image archive: its index, its
// docker manifest.json and every blob's digest and size. Small JSON blobs are
// kept in memory; with keepDir set, every blob is also written there.
type archive struct {
	hasLayout bool
	index     ociIndex
	docker    []dockerManifest
	blobSize  map[string]int64  // "sha256:<hex>" -> size
	blobHash  map[string]string // "sha256:<hex>" -> actual sha256 of content
	small     map[string][]byte // JSON blobs
	dir       string
}

func readArchive(t testing.TB, r io.Reader, keepDir string) *archive {
	t.Helper()
	a := &archive{blobSize: map[string]int64{}, blobHash: map[string]string{}, small: map[string][]byte{}, dir: keepDir}
	tr := tar.NewReader(r)
	var haveIndex bool
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading archive: %v", err)
		}
		name := path.Clean(hdr.Name)
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		switch {
		case name == "oci-layout":
			a.hasLayout = true
		case name == "index.json":
			if err := json.NewDecoder(tr).Decode(&a.index); err != nil {
				t.Fatalf("index.json: %v", err)
			}
			haveIndex = true
		case name == "manifest.json":
			if err := json.NewDecoder(tr).Decode(&a.docker); err != nil {
				t.Fatalf("manifest.json: %v", err)
			}
		case strings.HasPrefix(name, "blobs/sha256/"):
			digest := "sha256:" + strings.TrimPrefix(name, "blobs/sha256/")
			h := sha256.New()
			var w io.Writer = h
			var buf bytes.Buffer
			if hdr.Size < 1<<20 {
				w = io.MultiWriter(h, &buf)
			}
			var f *os.File
			if keepDir != "" {
				f, err = os.Create(filepath.Join(keepDir, strings.TrimPrefix(digest, "sha256:")))
				if err != nil {
					t.Fatal(err)
				}
				w = io.MultiWriter(w, f)
			}
			if _, err := io.Copy(w, tr); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if f != nil {
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			}
			a.blobSize[digest] = hdr.Size
			a.blobHash[digest] = "sha256:" + hex.EncodeToString(h.Sum(nil))
			if buf.Len() > 0 || hdr.Size == 0 {
				a.small[digest] = buf.Bytes()
			}
		}
	}
	if !haveIndex {
		t.Fatal("archive has no index.json")
	}
	return a
}

func readArchiveFile(t testing.TB, p, keepDir string) *archive {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return readArchive(t, f, keepDir)
}

// names returns the image names of the archive's index (containerd's view).
func (a *archive) names() []string {
	var out []string
	for _, d := range a.index.Manifests {
		out = append(out, d.Annotations["io.containerd.image.name"])
	}
	sort.Strings(out)
	return out
}

func (a *archive) json(t testing.TB, digest string, v any) {
	t.Helper()
	data, ok := a.small[digest]
	if !ok {
		t.Fatalf("blob %s missing from the archive", digest)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("blob %s: %v", digest, err)
	}
}

// image returns the manifest and config of the image named ref.
func (a *archive) image(t testing.TB, ref string) (ociManifest, imageConfig) {
	t.Helper()
	for _, d := range a.index.Manifests {
		if d.Annotations["io.containerd.image.name"] != ref {
			continue
		}
		var m ociManifest
		a.json(t, d.Digest, &m)
		var c imageConfig
		a.json(t, m.Config.Digest, &c)
		return m, c
	}
	t.Fatalf("image %s not in the archive (has %v)", ref, a.names())
	return ociManifest{}, imageConfig{}
}

// verify checks that the archive is complete and self-consistent: every
// blob's content matches its digest, every image's manifest, config and layers
// are present, diff_ids match the (uncompressed) layers, the platform matches
// the arch, and manifest.json names the same images with the same blobs.
func (a *archive) verify(t testing.TB, arch string) {
	t.Helper()
	if !a.hasLayout {
		t.Error("no oci-layout file: containerd would read the archive as docker-archive only")
	}
	for d, h := range a.blobHash {
		if d != h {
			t.Errorf("blob %s has content %s", d, h)
		}
	}
	if len(a.index.Manifests) == 0 {
		t.Fatal("index.json lists no image")
	}
	dockerByTag := map[string]dockerManifest{}
	for _, dm := range a.docker {
		for _, tag := range dm.RepoTags {
			dockerByTag[tag] = dm
		}
	}
	wantArch, wantVariant := arch, ""
	if arch == "arm" {
		wantVariant = "v7"
	}
	for _, d := range a.index.Manifests {
		name := d.Annotations["io.containerd.image.name"]
		if name == "" || d.Annotations["org.opencontainers.image.ref.name"] == "" {
			t.Errorf("manifest %s lacks the image name annotations: %v", d.Digest, d.Annotations)
			continue
		}
		if size, ok := a.blobSize[d.Digest]; !ok || size != d.Size {
			t.Errorf("%s: manifest blob %s missing or of wrong size", name, d.Digest)
			continue
		}
		if d.Platform == nil || d.Platform.Architecture != wantArch || d.Platform.OS != "linux" || d.Platform.Variant != wantVariant {
			t.Errorf("%s: platform %+v, want linux/%s %s", name, d.Platform, wantArch, wantVariant)
		}
		m, c := a.image(t, name)
		if c.Architecture != wantArch || c.OS != "linux" || c.Variant != wantVariant {
			t.Errorf("%s: config platform %s/%s/%s, want linux/%s/%s", name, c.OS, c.Architecture, c.Variant, wantArch, wantVariant)
		}
		if len(m.Layers) == 0 || len(m.Layers) != len(c.RootFS.DiffIDs) {
			t.Errorf("%s: %d layers but %d diff_ids", name, len(m.Layers), len(c.RootFS.DiffIDs))
		}
		for i, l := range m.Layers {
			if size, ok := a.blobSize[l.Digest]; !ok || size != l.Size {
				t.Errorf("%s: layer %s missing or of wrong size", name, l.Digest)
			}
			if i < len(c.RootFS.DiffIDs) && l.MediaType == "application/vnd.oci.image.layer.v1.tar" && c.RootFS.DiffIDs[i] != l.Digest {
				t.Errorf("%s: diff_id %d is %s, layer is %s", name, i, c.RootFS.DiffIDs[i], l.Digest)
			}
		}
		dm, ok := dockerByTag[name]
		if !ok {
			t.Errorf("%s: not among the RepoTags of manifest.json", name)
			continue
		}
		if dm.Config != "blobs/sha256/"+strings.TrimPrefix(m.Config.Digest, "sha256:") {
			t.Errorf("%s: manifest.json config %s, OCI config %s", name, dm.Config, m.Config.Digest)
		}
		if len(dm.Layers) != len(m.Layers) {
			t.Errorf("%s: manifest.json has %d layers, OCI manifest %d", name, len(dm.Layers), len(m.Layers))
		}
	}
}

// ------------------------------------------------------------------ tests

// TestImageArchives checks every per-image archive: name, platform,
// completeness, and the runtime settings the manifests rely on.
func TestImageArchives(t *testing.T) {
	want := map[string]struct {
		user       string
		entrypoint string
		port       string
	}{
		"coredns":     {"65532:65532", "/coredns", "53/udp"},
		"traefik":     {"65532:65532", "/usr/local/bin/traefik", "80/tcp"},
		"plumber-api": {"1000:1000", "/usr/bin/tini", "8000/tcp"},
		"pause":       {"65535:65535", "/pause", ""},
		"busybox":     {"", "", ""},
	}
	for _, name := range append(append([]string{}, bundledImages...), "busybox") {
		t.Run(name, func(t *testing.T) {
			a := readArchiveFile(t, imageArchive(t, name), "")
			a.verify(t, testArch())
			ref := imageRef(t, name)
			if got := a.names(); len(got) != 1 || got[0] != ref {
				t.Fatalf("archive names %v, want [%s]", got, ref)
			}
			_, c := a.image(t, ref)
			w := want[name]
			if c.Config.User != w.user {
				t.Errorf("user %q, want %q", c.Config.User, w.user)
			}
			if w.entrypoint != "" && (len(c.Config.Entrypoint) == 0 || c.Config.Entrypoint[0] != w.entrypoint) {
				t.Errorf("entrypoint %v, want %s first", c.Config.Entrypoint, w.entrypoint)
			}
			if _, ok := c.Config.ExposedPorts[w.port]; w.port != "" && !ok {
				t.Errorf("exposed ports %v lack %s", c.Config.ExposedPorts, w.port)
			}
		})
	}
}

// manifestImages returns every `image:` value in the YAML files of dir,
// mapped to the files naming it. A missing directory yields nothing.
func manifestImages(dir string) (map[string][]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	more, _ := filepath.Glob(filepath.Join(dir, "*.yml"))
	files = append(files, more...)
	re := regexp.MustCompile(`^\s*(?:-\s+)?image:\s*["']?([^"'\s#]+)["']?`)
	out := map[string][]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(data), "\n") {
			if m := re.FindStringSubmatch(line); m != nil {
				out[m[1]] = append(out[m[1]], filepath.Base(f))
			}
		}
	}
	return out, nil
}

// normalizeRef expands a reference the way containerd and kubelet do:
// "busybox" -> "docker.io/library/busybox:latest".
func normalizeRef(ref string) string {
	name, digest, _ := strings.Cut(ref, "@")
	first, _, hasSlash := strings.Cut(name, "/")
	if !hasSlash || (!strings.ContainsAny(first, ".:") && first != "localhost") {
		if !hasSlash {
			name = "library/" + name
		}
		name = "docker.io/" + name
	}
	if !strings.Contains(path.Base(name), ":") && digest == "" {
		name += ":latest"
	}
	if digest != "" {
		return name + "@" + digest
	}
	return name
}

// missingImages lists the manifest images that the archive does not hold.
func missingImages(manifests map[string][]string, archived []string) []string {
	have := map[string]bool{}
	for _, n := range archived {
		have[normalizeRef(n)] = true
	}
	var missing []string
	for img, files := range manifests {
		if !have[normalizeRef(img)] {
			missing = append(missing, fmt.Sprintf("%s (in %s)", img, strings.Join(files, ", ")))
		}
	}
	sort.Strings(missing)
	return missing
}

// readAirgap decompresses the air-gap bundle with the zstd CLI (the standard
// library has no zstd) and reads its table of contents.
func readAirgap(t testing.TB, keepDir string) *archive {
	t.Helper()
	p := artifact(t, "bramble-airgap-images-"+testArch()+".tar.zst")
	cmd := exec.Command("zstd", "-dc", "--long=27", p)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("zstd: %v (install it: make images-deps)", err)
	}
	a := readArchive(t, out, keepDir)
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("zstd -d %s: %v: %s", p, err, stderr.String())
	}
	return a
}

// TestAirgapBundle checks the air-gap bundle: one archive, complete, holding
// every bundled image and every image named in manifests/*.yaml.
func TestAirgapBundle(t *testing.T) {
	a := readAirgap(t, "")
	a.verify(t, testArch())
	names := a.names()
	t.Logf("air-gap bundle holds %v", names)

	for _, name := range bundledImages {
		ref := imageRef(t, name)
		found := false
		for _, n := range names {
			found = found || n == ref
		}
		if !found {
			t.Errorf("bundle lacks %s", ref)
		}
	}
	for _, n := range names {
		if strings.Contains(n, "/busybox:") {
			t.Errorf("bundle holds the test image %s", n)
		}
	}

	imgs, err := manifestImages(filepath.Join(repoRoot(t), "manifests"))
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) == 0 {
		t.Log("manifests/ has no image: checked the bundled images only")
	}
	if missing := missingImages(imgs, names); len(missing) > 0 {
		t.Errorf("manifests name images the air-gap bundle lacks (a node without internet could not start them): %s",
			strings.Join(missing, "; "))
	}
}

// TestManifestImageCheck makes sure the check above fails for a manifest that
// names an image the bundle lacks, and accepts short and full names alike.
func TestManifestImageCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ok.yaml", "spec:\n  containers:\n    - name: dns\n      image: docker.io/bramble/coredns:1.0\n    - image: \"bramble/pause:3\"\n")
	write("bad.yaml", "spec:\n  containers:\n  - name: web\n    image: nginx:1.27 # not bundled\n")
	imgs, err := manifestImages(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 3 {
		t.Fatalf("found %v, want 3 images", imgs)
	}
	archived := []string{"docker.io/bramble/coredns:1.0", "docker.io/bramble/pause:3"}
	missing := missingImages(imgs, archived)
	if len(missing) != 1 || !strings.HasPrefix(missing[0], "nginx:1.27 (in bad.yaml)") {
		t.Fatalf("missing = %v, want only nginx:1.27 from bad.yaml", missing)
	}
	if got := normalizeRef("nginx"); got != "docker.io/library/nginx:latest" {
		t.Errorf("normalizeRef(nginx) = %s", got)
	}
	if got := normalizeRef("localhost:5000/x"); got != "localhost:5000/x:latest" {
		t.Errorf("normalizeRef(localhost:5000/x) = %s", got)
	}
}
