// Command imagebuild writes reproducible container image archives without a
// container engine.
//
//	imagebuild layer -src DIR -out LAYER.tar
//	imagebuild image -out IMAGE.tar -name REF -arch ARCH -layer LAYER.tar [...]
//	imagebuild merge -out ALL.tar IMAGE.tar...
//	imagebuild list IMAGE.tar
//
// Every archive is at once an OCI image layout (oci-layout, index.json,
// blobs/sha256/...) and a docker-archive (manifest.json with RepoTags whose
// paths point into blobs/), the way `docker save` writes it since Docker 25.
// containerd (`ctr images import`, the CRI import) reads the OCI side and names
// each image from the io.containerd.image.name annotation; tools that only know
// docker-archive read manifest.json.
//
// Layers are uncompressed tars: the air-gap bundle is compressed as a whole
// with zstd, which compresses far better than gzip-inside-zstd.
//
// Reproducible: every timestamp is SOURCE_DATE_EPOCH (or -epoch), file owners
// are numeric only, entries are sorted, JSON has a fixed field order, so the
// same inputs give byte-identical archives.
package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"

	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "layer":
		err = cmdLayer(os.Args[2:])
	case "image":
		err = cmdImage(os.Args[2:])
	case "merge":
		err = cmdMerge(os.Args[2:])
	case "list":
		err = cmdList(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagebuild %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  imagebuild layer -src DIR -out LAYER.tar [-epoch N]
  imagebuild image -out IMAGE.tar -name REF -arch amd64|arm64|arm -layer LAYER.tar[::comment]... [config flags]
  imagebuild merge -out ALL.tar IMAGE.tar...
  imagebuild list IMAGE.tar`)
	os.Exit(2)
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func defaultEpoch() int64 {
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	}
	return 0
}

// ---------------------------------------------------------------- layer

func cmdLayer(args []string) error {
	fl := flag.NewFlagSet("layer", flag.ExitOnError)
	src := fl.String("src", "", "directory whose contents become the layer root")
	out := fl.String("out", "", "layer tar to write")
	epoch := fl.Int64("epoch", defaultEpoch(), "modification time of every entry (unix seconds)")
	_ = fl.Parse(args)
	if *src == "" || *out == "" {
		return errors.New("-src and -out are required")
	}
	return atomicWrite(*out, func(w io.Writer) error {
		return writeLayer(w, *src, time.Unix(*epoch, 0).UTC())
	})
}

type inode struct{ dev, ino uint64 }

// writeLayer tars the tree under root in lexical order with numeric owners,
// fixed times and hard links preserved. Sockets are skipped.
func writeLayer(w io.Writer, root string, mtime time.Time) error {
	tw := tar.NewWriter(w)
	links := map[inode]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		name := filepath.ToSlash(rel)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		hdr := &tar.Header{
			Name:    name,
			Mode:    int64(st.Mode & 0o7777),
			Uid:     int(st.Uid),
			Gid:     int(st.Gid),
			ModTime: mtime,
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = target
		case syscall.S_IFREG:
			key := inode{uint64(st.Dev), uint64(st.Ino)}
			if st.Nlink > 1 {
				if first, ok := links[key]; ok {
					hdr.Typeflag = tar.TypeLink
					hdr.Linkname = first
					return tw.WriteHeader(hdr)
				}
				links[key] = name
			}
			hdr.Typeflag = tar.TypeReg
			hdr.Size = st.Size
		case syscall.S_IFCHR, syscall.S_IFBLK:
			hdr.Typeflag = tar.TypeChar
			if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
				hdr.Typeflag = tar.TypeBlock
			}
			rdev := uint64(st.Rdev)
			hdr.Devmajor = int64(((rdev >> 8) & 0xfff) | ((rdev >> 32) & 0xfffff000))
			hdr.Devminor = int64((rdev & 0xff) | ((rdev >> 12) & 0xffffff00))
		case syscall.S_IFIFO:
			hdr.Typeflag = tar.TypeFifo
		default:
			fmt.Fprintf(os.Stderr, "imagebuild layer: skipping %s (unsupported file type)\n", name)
			return nil
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			n, err := io.Copy(tw, f)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if n != hdr.Size {
				return fmt.Errorf("%s: size changed while reading", name)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// ---------------------------------------------------------------- image

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

type runConfig struct {
	User         string              `json:"User,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	Env          []string            `json:"Env,omitempty"`
	Entrypoint   []string            `json:"Entrypoint,omitempty"`
	Cmd          []string            `json:"Cmd,omitempty"`
	WorkingDir   string              `json:"WorkingDir,omitempty"`
	Labels       map[string]string   `json:"Labels,omitempty"`
	StopSignal   string              `json:"StopSignal,omitempty"`
}

type history struct {
	Created   string `json:"created"`
	CreatedBy string `json:"created_by"`
	Comment   string `json:"comment,omitempty"`
}

type imageConfig struct {
	Created      string    `json:"created"`
	Architecture string    `json:"architecture"`
	Variant      string    `json:"variant,omitempty"`
	OS           string    `json:"os"`
	Config       runConfig `json:"config"`
	RootFS       struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
	History []history `json:"history"`
}

// blob is one file of blobs/sha256/: in memory or a file on disk.
type blob struct {
	digest string
	size   int64
	data   []byte
	path   string
}

func (b blob) hex() string { return strings.TrimPrefix(b.digest, "sha256:") }

func memBlob(data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{digest: "sha256:" + hex.EncodeToString(sum[:]), size: int64(len(data)), data: data}
}

func fileBlob(p string) (blob, error) {
	f, err := os.Open(p)
	if err != nil {
		return blob{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return blob{}, err
	}
	return blob{digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), size: n, path: p}, nil
}

func platformFor(arch string) (platform, error) {
	switch arch {
	case "amd64", "arm64":
		return platform{Architecture: arch, OS: "linux"}, nil
	case "arm":
		return platform{Architecture: "arm", OS: "linux", Variant: "v7"}, nil
	}
	return platform{}, fmt.Errorf("unsupported arch %q (want amd64, arm64 or arm)", arch)
}

func cmdImage(args []string) error {
	fl := flag.NewFlagSet("image", flag.ExitOnError)
	out := fl.String("out", "", "archive to write")
	name := fl.String("name", "", "fully qualified image reference, e.g. docker.io/bramble/pause:3.10-bramble")
	arch := fl.String("arch", "", "amd64, arm64 or arm (armv7)")
	epoch := fl.Int64("epoch", defaultEpoch(), "creation time (unix seconds)")
	entrypoint := fl.String("entrypoint", "", "entrypoint as a JSON array")
	cmd := fl.String("cmd", "", "cmd as a JSON array")
	user := fl.String("user", "", "user[:group], numeric so kubelet can check runAsNonRoot")
	workdir := fl.String("workdir", "", "working directory")
	stopSignal := fl.String("stop-signal", "", "stop signal")
	var layers, envs, ports, labels multiFlag
	fl.Var(&layers, "layer", "layer tar, optionally followed by ::comment (repeatable, base first)")
	fl.Var(&envs, "env", "KEY=value (repeatable)")
	fl.Var(&ports, "expose", "port/proto (repeatable)")
	fl.Var(&labels, "label", "key=value (repeatable)")
	_ = fl.Parse(args)
	if *out == "" || *name == "" || *arch == "" || len(layers) == 0 {
		return errors.New("-out, -name, -arch and at least one -layer are required")
	}
	if !strings.Contains(*name, "/") || !strings.Contains(path.Base(*name), ":") {
		return fmt.Errorf("-name %q must be fully qualified with a tag (registry/repo:tag)", *name)
	}
	plat, err := platformFor(*arch)
	if err != nil {
		return err
	}
	created := time.Unix(*epoch, 0).UTC().Format(time.RFC3339)

	cfg := imageConfig{Created: created, Architecture: plat.Architecture, Variant: plat.Variant, OS: plat.OS}
	cfg.RootFS.Type = "layers"
	cfg.Config = runConfig{User: *user, Env: envs, WorkingDir: *workdir, StopSignal: *stopSignal}
	if *entrypoint != "" {
		if err := json.Unmarshal([]byte(*entrypoint), &cfg.Config.Entrypoint); err != nil {
			return fmt.Errorf("-entrypoint: %w", err)
		}
	}
	if *cmd != "" {
		if err := json.Unmarshal([]byte(*cmd), &cfg.Config.Cmd); err != nil {
			return fmt.Errorf("-cmd: %w", err)
		}
	}
	for _, p := range ports {
		if !strings.Contains(p, "/") {
			p += "/tcp"
		}
		if cfg.Config.ExposedPorts == nil {
			cfg.Config.ExposedPorts = map[string]struct{}{}
		}
		cfg.Config.ExposedPorts[p] = struct{}{}
	}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return fmt.Errorf("-label %q: want key=value", l)
		}
		if cfg.Config.Labels == nil {
			cfg.Config.Labels = map[string]string{}
		}
		cfg.Config.Labels[k] = v
	}

	var blobs []blob
	var layerDescs []descriptor
	for _, l := range layers {
		file, comment, _ := strings.Cut(l, "::")
		b, err := fileBlob(file)
		if err != nil {
			return err
		}
		blobs = append(blobs, b)
		layerDescs = append(layerDescs, descriptor{MediaType: mediaTypeLayer, Digest: b.digest, Size: b.size})
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, b.digest)
		if comment == "" {
			comment = "layer " + strconv.Itoa(len(layerDescs))
		}
		cfg.History = append(cfg.History, history{Created: created, CreatedBy: "bramble imagebuild", Comment: comment})
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	cfgBlob := memBlob(cfgJSON)
	mf := manifest{
		SchemaVersion: 2,
		MediaType:     mediaTypeManifest,
		Config:        descriptor{MediaType: mediaTypeConfig, Digest: cfgBlob.digest, Size: cfgBlob.size},
		Layers:        layerDescs,
	}
	mfJSON, err := json.Marshal(mf)
	if err != nil {
		return err
	}
	mfBlob := memBlob(mfJSON)
	blobs = append(blobs, cfgBlob, mfBlob)

	desc := descriptor{
		MediaType: mediaTypeManifest,
		Digest:    mfBlob.digest,
		Size:      mfBlob.size,
		Annotations: map[string]string{
			annotationImageName: *name,
			annotationRefName:   *name,
		},
		Platform: &plat,
	}
	dm := dockerManifest{Config: "blobs/sha256/" + cfgBlob.hex(), RepoTags: []string{*name}}
	for _, b := range blobs[:len(layerDescs)] {
		dm.Layers = append(dm.Layers, "blobs/sha256/"+b.hex())
	}
	return atomicWrite(*out, func(w io.Writer) error {
		return writeArchive(w, blobs, []descriptor{desc}, []dockerManifest{dm}, *epoch)
	})
}

// writeArchive writes oci-layout, the blobs (each digest once), index.json
// and manifest.json.
func writeArchive(w io.Writer, blobs []blob, descs []descriptor, dms []dockerManifest, epoch int64) error {
	mtime := time.Unix(epoch, 0).UTC()
	tw := tar.NewWriter(w)
	file := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: mtime})
	}
	if err := file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := dir("blobs/"); err != nil {
		return err
	}
	if err := dir("blobs/sha256/"); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, b := range blobs {
		if seen[b.digest] {
			continue
		}
		seen[b.digest] = true
		name := "blobs/sha256/" + b.hex()
		if b.path == "" {
			if err := file(name, b.data); err != nil {
				return err
			}
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: b.size, ModTime: mtime}); err != nil {
			return err
		}
		f, err := os.Open(b.path)
		if err != nil {
			return err
		}
		n, err := io.Copy(tw, f)
		f.Close()
		if err != nil {
			return err
		}
		if n != b.size {
			return fmt.Errorf("%s changed while writing", b.path)
		}
	}
	idx, err := json.Marshal(index{SchemaVersion: 2, MediaType: mediaTypeIndex, Manifests: descs})
	if err != nil {
		return err
	}
	if err := file("index.json", idx); err != nil {
		return err
	}
	dmJSON, err := json.Marshal(dms)
	if err != nil {
		return err
	}
	if err := file("manifest.json", dmJSON); err != nil {
		return err
	}
	return tw.Close()
}

// ---------------------------------------------------------------- merge

func cmdMerge(args []string) error {
	fl := flag.NewFlagSet("merge", flag.ExitOnError)
	out := fl.String("out", "", "archive to write")
	epoch := fl.Int64("epoch", defaultEpoch(), "timestamp of archive entries (unix seconds)")
	_ = fl.Parse(args)
	inputs := fl.Args()
	if *out == "" || len(inputs) == 0 {
		return errors.New("-out and at least one input archive are required")
	}
	var (
		descs []descriptor
		dms   []dockerManifest
		names = map[string]string{}
	)
	// First pass: read the small JSON files and check for clashes.
	for _, in := range inputs {
		idx, dm, err := readMeta(in)
		if err != nil {
			return fmt.Errorf("%s: %w", in, err)
		}
		for _, d := range idx.Manifests {
			n := d.Annotations[annotationImageName]
			if prev, ok := names[n]; ok && n != "" {
				return fmt.Errorf("image %s is in both %s and %s", n, prev, in)
			}
			names[n] = in
		}
		descs = append(descs, idx.Manifests...)
		dms = append(dms, dm...)
	}
	return atomicWrite(*out, func(w io.Writer) error {
		mtime := time.Unix(*epoch, 0).UTC()
		tw := tar.NewWriter(w)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "oci-layout", Mode: 0o644, Size: 30, ModTime: mtime}); err != nil {
			return err
		}
		if _, err := io.WriteString(tw, `{"imageLayoutVersion":"1.0.0"}`); err != nil {
			return err
		}
		for _, d := range []string{"blobs/", "blobs/sha256/"} {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mtime}); err != nil {
				return err
			}
		}
		seen := map[string]bool{}
		for _, in := range inputs {
			if err := copyBlobs(tw, in, seen, mtime); err != nil {
				return fmt.Errorf("%s: %w", in, err)
			}
		}
		writeJSON := func(name string, v any) error {
			data, err := json.Marshal(v)
			if err != nil {
				return err
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime}); err != nil {
				return err
			}
			_, err = tw.Write(data)
			return err
		}
		if err := writeJSON("index.json", index{SchemaVersion: 2, MediaType: mediaTypeIndex, Manifests: descs}); err != nil {
			return err
		}
		if err := writeJSON("manifest.json", dms); err != nil {
			return err
		}
		return tw.Close()
	})
}

func readMeta(p string) (index, []dockerManifest, error) {
	var idx index
	var dms []dockerManifest
	f, err := os.Open(p)
	if err != nil {
		return idx, nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var haveIdx bool
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return idx, nil, err
		}
		switch path.Clean(hdr.Name) {
		case "index.json":
			if err := json.NewDecoder(tr).Decode(&idx); err != nil {
				return idx, nil, fmt.Errorf("index.json: %w", err)
			}
			haveIdx = true
		case "manifest.json":
			if err := json.NewDecoder(tr).Decode(&dms); err != nil {
				return idx, nil, fmt.Errorf("manifest.json: %w", err)
			}
		}
	}
	if !haveIdx {
		return idx, nil, errors.New("no index.json: not an archive written by imagebuild")
	}
	return idx, dms, nil
}

func copyBlobs(tw *tar.Writer, p string, seen map[string]bool, mtime time.Time) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean(hdr.Name)
		if hdr.Typeflag != tar.TypeReg || !strings.HasPrefix(name, "blobs/sha256/") || seen[name] {
			continue
		}
		seen[name] = true
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: hdr.Size, ModTime: mtime}); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}

// ---------------------------------------------------------------- list

func cmdList(args []string) error {
	if len(args) != 1 {
		return errors.New("want exactly one archive")
	}
	idx, _, err := readMeta(args[0])
	if err != nil {
		return err
	}
	sort.SliceStable(idx.Manifests, func(i, j int) bool {
		return idx.Manifests[i].Annotations[annotationImageName] < idx.Manifests[j].Annotations[annotationImageName]
	})
	for _, d := range idx.Manifests {
		plat := ""
		if d.Platform != nil {
			plat = d.Platform.OS + "/" + d.Platform.Architecture
			if d.Platform.Variant != "" {
				plat += "/" + d.Platform.Variant
			}
		}
		fmt.Printf("%s\t%s\t%s\n", d.Annotations[annotationImageName], plat, d.Digest)
	}
	return nil
}

// ---------------------------------------------------------------- helpers

// atomicWrite writes to a temporary file beside dst and renames it into place,
// so an interrupted build never leaves a truncated archive behind.
func atomicWrite(dst string, fn func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := fn(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
