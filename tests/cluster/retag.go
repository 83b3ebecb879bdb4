package cluster

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
)

// RetagArchive copies the single-image archive src (an uncompressed tar
// that is an OCI layout and a docker-archive at once, as `make images`
// writes them) to dst with the image named name: the index.json
// annotations and the manifest.json RepoTags are rewritten, the blobs are
// copied unchanged (so the new image shares its content with the old one).
func RetagArchive(src, dst, name string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(out)
	tr := tar.NewReader(in)
	renamed := 0
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			out.Close()
			return fmt.Errorf("%s: %w", src, err)
		}
		var data []byte
		switch path.Clean(hdr.Name) {
		case "index.json":
			data, err = retagJSON(tr, func(v map[string]any) error {
				ms, _ := v["manifests"].([]any)
				if len(ms) != 1 {
					return fmt.Errorf("index.json lists %d images, want 1", len(ms))
				}
				m, _ := ms[0].(map[string]any)
				ann, _ := m["annotations"].(map[string]any)
				if ann == nil {
					ann = map[string]any{}
					m["annotations"] = ann
				}
				ann["io.containerd.image.name"] = name
				ann["org.opencontainers.image.ref.name"] = name
				return nil
			})
		case "manifest.json":
			data, err = retagJSON(tr, func(v any) error {
				list, _ := v.([]any)
				if len(list) != 1 {
					return fmt.Errorf("manifest.json lists %d images, want 1", len(list))
				}
				m, _ := list[0].(map[string]any)
				if m == nil {
					return errors.New("manifest.json: not a docker-archive manifest")
				}
				m["RepoTags"] = []string{name}
				return nil
			})
		}
		if err != nil {
			out.Close()
			return fmt.Errorf("%s: %s: %w", src, hdr.Name, err)
		}
		if data != nil {
			hdr.Size = int64(len(data))
			renamed++
		}
		if err := tw.WriteHeader(hdr); err != nil {
			out.Close()
			return err
		}
		if data != nil {
			_, err = tw.Write(data)
		} else {
			_, err = io.Copy(tw, tr)
		}
		if err != nil {
			out.Close()
			return err
		}
	}
	if renamed == 0 {
		out.Close()
		return fmt.Errorf("%s has neither index.json nor manifest.json: not an image archive", src)
	}
	if err := tw.Close(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// retagJSON decodes a JSON document, lets edit change it, and encodes it.
func retagJSON[T any](r io.Reader, edit func(T) error) ([]byte, error) {
	var v T
	if err := json.NewDecoder(r).Decode(&v); err != nil {
		return nil, err
	}
	if err := edit(v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}
