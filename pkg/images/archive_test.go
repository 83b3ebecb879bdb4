package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/platforms"
	"github.com/klauspost/compress/zstd"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// testImage describes a one-layer image written by ociArchive / dockerArchive.
type testImage struct {
	name    string // full name for io.containerd.image.name / RepoTags
	refName string // org.opencontainers.image.ref.name; "" = tag of name
	file    string // path of the single file in the layer
	content string // its content
	noName  bool   // OCI: leave io.containerd.image.name out
}

type blob struct {
	digest string // "sha256:<hex>"
	data   []byte
}

func newBlob(data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{digest: "sha256:" + hex.EncodeToString(sum[:]), data: data}
}

func (b blob) hex() string { return strings.TrimPrefix(b.digest, "sha256:") }

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tarFiles writes an uncompressed tar with the given files in order.
func tarFiles(t *testing.T, files ...struct {
	name string
	data []byte
}) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	dirs := map[string]bool{}
	for _, f := range files {
		for d := filepath.Dir(f.name); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	sortedDirs := make([]string, 0, len(dirs))
	for d := range dirs {
		sortedDirs = append(sortedDirs, d)
	}
	slices.Sort(sortedDirs)
	for _, d := range sortedDirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime}); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: mtime}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type tarFile = struct {
	name string
	data []byte
}

// imageBlobs returns the layer and config blobs of img.
func imageBlobs(t *testing.T, img testImage) (layer, config blob) {
	t.Helper()
	layer = newBlob(tarFiles(t, tarFile{img.file, []byte(img.content)}))
	p := platforms.DefaultSpec()
	cfg := map[string]any{
		"architecture": p.Architecture,
		"os":           p.OS,
		"config":       map[string]any{"Cmd": []string{"/" + img.file}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layer.digest}},
	}
	if p.Variant != "" {
		cfg["variant"] = p.Variant
	}
	return layer, newBlob(mustJSON(t, cfg))
}

// ociArchive builds an OCI image layout tar holding imgs.
func ociArchive(t *testing.T, imgs ...testImage) []byte {
	t.Helper()
	var files []tarFile
	files = append(files, tarFile{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)})
	var manifests []map[string]any
	p := platforms.DefaultSpec()
	for _, img := range imgs {
		layer, config := imageBlobs(t, img)
		mfst := newBlob(mustJSON(t, map[string]any{
			"schemaVersion": 2,
			"mediaType":     "application/vnd.oci.image.manifest.v1+json",
			"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest, "size": len(config.data)},
			"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.digest, "size": len(layer.data)}},
		}))
		for _, b := range []blob{layer, config, mfst} {
			files = append(files, tarFile{"blobs/sha256/" + b.hex(), b.data})
		}
		ref := img.refName
		if ref == "" {
			ref = img.name[strings.LastIndex(img.name, ":")+1:]
		}
		ann := map[string]string{"org.opencontainers.image.ref.name": ref}
		if !img.noName {
			ann["io.containerd.image.name"] = img.name
		}
		manifests = append(manifests, map[string]any{
			"mediaType":   "application/vnd.oci.image.manifest.v1+json",
			"digest":      mfst.digest,
			"size":        len(mfst.data),
			"annotations": ann,
			"platform":    map[string]any{"architecture": p.Architecture, "os": p.OS},
		})
	}
	files = append(files, tarFile{"index.json", mustJSON(t, map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     manifests,
	})})
	return tarFiles(t, files...)
}

// dockerArchive builds a `docker save` style archive holding imgs.
func dockerArchive(t *testing.T, imgs ...testImage) []byte {
	t.Helper()
	var files []tarFile
	var mfsts []map[string]any
	for _, img := range imgs {
		layer, config := imageBlobs(t, img)
		files = append(files,
			tarFile{layer.hex() + "/layer.tar", layer.data},
			tarFile{config.hex() + ".json", config.data})
		mfsts = append(mfsts, map[string]any{
			"Config":   config.hex() + ".json",
			"RepoTags": []string{img.name},
			"Layers":   []string{layer.hex() + "/layer.tar"},
		})
	}
	files = append(files, tarFile{"manifest.json", mustJSON(t, mfsts)})
	return tarFiles(t, files...)
}

func zstdBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestArchiveImageNames(t *testing.T) {
	a := testImage{name: "docker.io/bramble-test/a:v1", file: "a.txt", content: "a"}
	b := testImage{name: "registry.local:5000/team/b:2", file: "b.txt", content: "b"}
	tagOnly := testImage{name: "x:latest", file: "c.txt", content: "c", noName: true}
	refFull := testImage{name: "ignored:1", refName: "quay.io/org/d:3", file: "d.txt", content: "d", noName: true}
	short := testImage{name: "busybox:1.36", file: "e.txt", content: "e"}
	tests := []struct {
		name string
		data []byte
		want []string
	}{
		{"oci", ociArchive(t, a, b), []string{"docker.io/bramble-test/a:v1", "registry.local:5000/team/b:2"}},
		{"oci zstd", zstdBytes(t, ociArchive(t, a)), []string{"docker.io/bramble-test/a:v1"}},
		{"oci gzip", gzipBytes(t, ociArchive(t, b)), []string{"registry.local:5000/team/b:2"}},
		{"oci bare tag names nothing", ociArchive(t, tagOnly), nil},
		{"oci full ref.name", ociArchive(t, refFull), []string{"quay.io/org/d:3"}},
		{"docker normalises RepoTags", dockerArchive(t, short, a), []string{"docker.io/bramble-test/a:v1", "docker.io/library/busybox:1.36"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := archiveImageNames(bytes.NewReader(tt.data), platforms.Default())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("names = %q, want %q", got, tt.want)
			}
		})
	}

	if _, err := archiveImageNames(strings.NewReader("this is not a tar archive, just text that is long enough to fill a header block or so..."), platforms.Default()); err == nil {
		t.Error("garbage: want an error")
	}
	full := zstdBytes(t, ociArchive(t, a))
	if _, err := archiveImageNames(bytes.NewReader(full[:len(full)/2]), platforms.Default()); err == nil {
		t.Error("truncated zstd: want an error")
	}
}

func TestIsArchive(t *testing.T) {
	for name, want := range map[string]bool{
		"a.tar": true, "a.tar.zst": true, "a.tar.gz": true, "a.tgz": true,
		"a.zst": false, "a.tar.xz": false, ".tar": false, "a.txt": false, "state.json": false,
	} {
		if got := IsArchive(name); got != want {
			t.Errorf("IsArchive(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestTranslateOCIRefName(t *testing.T) {
	for in, want := range map[string]string{
		"latest":                 "",
		"":                       "",
		"busybox:1.36":           "docker.io/library/busybox:1.36",
		"docker.io/bramble/x:v1": "docker.io/bramble/x:v1",
		"ghcr.io/a/b":            "ghcr.io/a/b:latest",
		"UPPER:case":             "",
	} {
		if got := translateOCIRefName(in); got != want {
			t.Errorf("translateOCIRefName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "images.json")
	st, err := loadState(p)
	if err != nil || len(st.Files) != 0 {
		t.Fatalf("missing state: %v %v", st, err)
	}
	mt := time.Date(2025, 5, 6, 7, 8, 9, 123456789, time.Local)
	st.Files["/x/a.tar"] = fileState{Size: 42, ModTime: mt, Images: []string{"docker.io/a:1"}}
	if err := st.save(p); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state mode %v, want 0600", fi.Mode().Perm())
	}
	st2, err := loadState(p)
	if err != nil {
		t.Fatal(err)
	}
	got := st2.Files["/x/a.tar"]
	if got.Size != 42 || !got.ModTime.Equal(mt) || !slices.Equal(got.Images, []string{"docker.io/a:1"}) {
		t.Fatalf("round trip: %+v", got)
	}
	if err := os.WriteFile(p, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadState(p); err == nil {
		t.Error("corrupt state: want an error")
	}
}

func TestReportProgress(t *testing.T) {
	var logs testutil.SyncBuffer
	im := New(nil, "", newTestLogger(&logs))
	im.ProgressInterval = 20 * time.Millisecond
	c := &countingReader{r: strings.NewReader(strings.Repeat("x", 1000))}
	stop := im.reportProgress("/dir/big.tar.zst", 1000, c)
	buf := make([]byte, 500)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(120 * time.Millisecond)
	stop()
	out := logs.String()
	if !strings.Contains(out, "importing image archive") || !strings.Contains(out, "file=big.tar.zst") ||
		!strings.Contains(out, "read=500") || !strings.Contains(out, "percent=50") {
		t.Fatalf("progress logs:\n%s", out)
	}
	n := strings.Count(logs.String(), "\n")
	time.Sleep(60 * time.Millisecond)
	if strings.Count(logs.String(), "\n") != n {
		t.Error("progress kept logging after stop")
	}
}
