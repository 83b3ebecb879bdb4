package cluster

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"time"
)

// RetagArchive copies the single-image archive src (an uncompressed tar
// that is an OCI layout and a docker-archive at once, as `make images`
// writes them) to dst with the image named name: the index.json
// annotations and the manifest.json RepoTags are rewritten and the blobs
// copied, so the new image shares its content with the old one. With files,
// the image gets one more layer holding them (path in the image: content),
// so a node that has the old image still lacks a layer of the new one.
func RetagArchive(src, dst, name string, files map[string]string) error {
	var extra *addedLayer
	if len(files) > 0 {
		var err error
		if extra, err = newLayer(src, files); err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if err := copyRetagged(tar.NewReader(in), tar.NewWriter(out), name, extra); err != nil {
		out.Close()
		return fmt.Errorf("%s: %w", src, err)
	}
	return out.Close()
}

func copyRetagged(tr *tar.Reader, tw *tar.Writer, name string, extra *addedLayer) error {
	renamed := 0
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		var data []byte
		switch path.Clean(hdr.Name) {
		case "index.json":
			data, err = editJSON(tr, func(v map[string]any) error {
				ms, _ := v["manifests"].([]any)
				m, _ := first(ms).(map[string]any)
				if len(ms) != 1 || m == nil {
					return fmt.Errorf("index.json lists %d images, want 1", len(ms))
				}
				ann, _ := m["annotations"].(map[string]any)
				if ann == nil {
					ann = map[string]any{}
					m["annotations"] = ann
				}
				ann["io.containerd.image.name"] = name
				ann["org.opencontainers.image.ref.name"] = name
				if extra != nil {
					m["digest"], m["size"] = extra.manifest.digest, len(extra.manifest.data)
				}
				return nil
			})
		case "manifest.json":
			data, err = editJSON(tr, func(v []map[string]any) error {
				if len(v) != 1 {
					return fmt.Errorf("manifest.json lists %d images, want 1", len(v))
				}
				v[0]["RepoTags"] = []string{name}
				if extra != nil {
					v[0]["Config"] = extra.config.path()
					layers, _ := v[0]["Layers"].([]any)
					v[0]["Layers"] = append(layers, extra.layer.path())
				}
				return nil
			})
		}
		if err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		if data != nil {
			hdr.Size = int64(len(data))
			renamed++
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if data != nil {
			_, err = tw.Write(data)
		} else {
			_, err = io.Copy(tw, tr)
		}
		if err != nil {
			return err
		}
	}
	if renamed == 0 {
		return errors.New("neither index.json nor manifest.json: not an image archive")
	}
	if extra != nil {
		for _, b := range []blob{extra.layer, extra.config, extra.manifest} {
			if err := writeEntry(tw, b.path(), b.data); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

func first(s []any) any {
	if len(s) == 0 {
		return nil
	}
	return s[0]
}

// blob is content stored under blobs/sha256/ in a layout.
type blob struct {
	digest string
	data   []byte
}

func newBlob(data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{digest: "sha256:" + hex.EncodeToString(sum[:]), data: data}
}

func (b blob) path() string { return "blobs/sha256/" + b.digest[len("sha256:"):] }

// addedLayer is a new layer with the config and manifest that name it.
type addedLayer struct{ layer, config, manifest blob }

// newLayer reads the archive's manifest and config and makes the new
// layer, config and manifest.
func newLayer(src string, files map[string]string) (*addedLayer, error) {
	index, err := readEntry(src, "index.json")
	if err != nil {
		return nil, err
	}
	var idx struct{ Manifests []struct{ Digest string } }
	if err := json.Unmarshal(index, &idx); err != nil || len(idx.Manifests) != 1 {
		return nil, fmt.Errorf("index.json: want one image (%v)", err)
	}
	manifest, err := readEntry(src, blob{digest: idx.Manifests[0].Digest}.path())
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(manifest, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	cfgDesc, _ := m["config"].(map[string]any)
	cfgDigest, _ := cfgDesc["digest"].(string)
	config, err := readEntry(src, blob{digest: cfgDigest}.path())
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := writeEntry(tw, n, []byte(files[n])); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	a := &addedLayer{layer: newBlob(buf.Bytes())}

	var cfg map[string]any
	if err := json.Unmarshal(config, &cfg); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	rootfs, _ := cfg["rootfs"].(map[string]any)
	if rootfs == nil {
		return nil, errors.New("config has no rootfs")
	}
	ids, _ := rootfs["diff_ids"].([]any)
	rootfs["diff_ids"] = append(ids, a.layer.digest) // uncompressed: diff ID = digest
	if hist, ok := cfg["history"].([]any); ok {
		cfg["history"] = append(hist, map[string]any{"created_by": "tests/cluster RetagArchive"})
	}
	cfgData, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	a.config = newBlob(cfgData)
	cfgDesc["digest"], cfgDesc["size"] = a.config.digest, len(cfgData)
	layers, _ := m["layers"].([]any)
	m["layers"] = append(layers, map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar",
		"digest": a.layer.digest, "size": len(a.layer.data)})
	mData, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	a.manifest = newBlob(mData)
	return a, nil
}

// readEntry reads one member of a tar.
func readEntry(src, name string) ([]byte, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("no %s", name)
		}
		if err != nil {
			return nil, err
		}
		if path.Clean(hdr.Name) == name {
			return io.ReadAll(io.LimitReader(tr, 16<<20))
		}
	}
}

func writeEntry(tw *tar.Writer, name string, data []byte) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// editJSON decodes a JSON document, lets edit change it, and encodes it.
func editJSON[T any](r io.Reader, edit func(T) error) ([]byte, error) {
	var v T
	if err := json.NewDecoder(r).Decode(&v); err != nil {
		return nil, err
	}
	if err := edit(v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}
