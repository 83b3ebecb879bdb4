package images

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"time"

	"github.com/containerd/platforms"
	"github.com/distribution/reference"

	"github.com/bramble-pi/bramble/pkg/atomicfile"
)

// Annotations naming an image in an OCI layout's index.json.
const (
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

// archiveImageNames reads a (possibly compressed) archive and returns the
// image names an import of it creates for the platform: like containerd's
// importer, from index.json when the archive has an oci-layout file, else
// from the RepoTags of a docker manifest.json. Sorted, without duplicates.
func archiveImageNames(r io.Reader, platform platforms.MatchComparer) ([]string, error) {
	tr0, closeFn, err := decompress(r)
	if err != nil {
		return nil, err
	}
	defer closeFn()

	var (
		ociLayout bool
		index     []byte
		manifest  []byte
	)
	tr := tar.NewReader(tr0)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read tar: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		switch path.Clean(hdr.Name) {
		case "oci-layout":
			ociLayout = true
		case "index.json":
			if index, err = readSmall(tr, hdr); err != nil {
				return nil, err
			}
		case "manifest.json":
			if manifest, err = readSmall(tr, hdr); err != nil {
				return nil, err
			}
		}
	}

	var names []string
	switch {
	case ociLayout:
		if index == nil {
			return nil, errors.New("OCI layout without index.json")
		}
		var idx struct {
			Manifests []struct {
				Annotations map[string]string   `json:"annotations"`
				Platform    *platforms.Platform `json:"platform"`
			} `json:"manifests"`
		}
		if err := json.Unmarshal(index, &idx); err != nil {
			return nil, fmt.Errorf("parse index.json: %w", err)
		}
		for _, m := range idx.Manifests {
			if m.Platform != nil && !platform.Match(*m.Platform) {
				continue
			}
			name := m.Annotations[annotationImageName]
			if name == "" {
				name = translateOCIRefName(m.Annotations[annotationRefName])
			}
			if name != "" {
				names = append(names, name)
			}
		}
	case manifest != nil:
		var mfsts []struct {
			RepoTags []string `json:"RepoTags"`
		}
		if err := json.Unmarshal(manifest, &mfsts); err != nil {
			return nil, fmt.Errorf("parse manifest.json: %w", err)
		}
		for _, m := range mfsts {
			for _, tag := range m.RepoTags {
				named, err := reference.ParseDockerRef(tag)
				if err != nil {
					return nil, fmt.Errorf("manifest.json: image name %q: %w", tag, err)
				}
				names = append(names, named.String())
			}
		}
	default:
		return nil, errors.New("unrecognized image archive: neither an OCI layout (oci-layout, index.json) nor a docker archive (manifest.json)")
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// readSmall reads a JSON member of an archive, refusing absurd sizes.
func readSmall(r io.Reader, hdr *tar.Header) ([]byte, error) {
	const limit = 16 << 20
	if hdr.Size > limit {
		return nil, fmt.Errorf("%s is too large (%d bytes)", hdr.Name, hdr.Size)
	}
	b, err := io.ReadAll(io.LimitReader(r, limit))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", hdr.Name, err)
	}
	return b, nil
}

// ---- spooling a reader so it can be read twice

// spoolMemLimit is how much of a reader spool keeps in memory before it
// moves to a temporary file.
const spoolMemLimit = 64 << 20

type spooled struct {
	mem  []byte
	file *os.File
	size int64
}

// spool reads r to its end, into memory when it is small, else into a
// temporary file removed by Close.
func spool(r io.Reader) (*spooled, error) {
	mem, err := io.ReadAll(io.LimitReader(r, spoolMemLimit+1))
	if err != nil {
		return nil, fmt.Errorf("read archive: %w", err)
	}
	if len(mem) <= spoolMemLimit {
		return &spooled{mem: mem, size: int64(len(mem))}, nil
	}
	f, err := os.CreateTemp("", "bramble-image-*.tar")
	if err != nil {
		return nil, fmt.Errorf("spool archive: %w", err)
	}
	s := &spooled{file: f}
	if _, err := f.Write(mem); err != nil {
		s.Close()
		return nil, fmt.Errorf("spool archive: %w", err)
	}
	n, err := io.Copy(f, r)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("spool archive: %w", err)
	}
	s.size = int64(len(mem)) + n
	return s, nil
}

// Reader returns a reader from the start of the spooled data.
func (s *spooled) Reader() (io.Reader, error) {
	if s.file == nil {
		return bytes.NewReader(s.mem), nil
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewind spooled archive: %w", err)
	}
	return s.file, nil
}

func (s *spooled) Size() int64 { return s.size }

func (s *spooled) Close() {
	if s.file != nil {
		_ = s.file.Close()
		_ = os.Remove(s.file.Name())
	}
}

// ---- state file

const stateVersion = 1

// state is what ImportDir remembers between starts.
type state struct {
	Version int                  `json:"version"`
	Files   map[string]fileState `json:"files"`
}

// fileState identifies an archive as it was imported and lists its images.
type fileState struct {
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	Images  []string  `json:"images"`
}

func newState() *state {
	return &state{Version: stateVersion, Files: map[string]fileState{}}
}

// loadState reads the state file; a missing file is an empty state.
func loadState(p string) (*state, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return newState(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read image import state: %w", err)
	}
	st := newState()
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("parse image import state %s: %w", p, err)
	}
	if st.Version != stateVersion {
		return newState(), nil
	}
	if st.Files == nil {
		st.Files = map[string]fileState{}
	}
	return st, nil
}

// save writes the state file atomically, mode 0600.
func (st *state) save(p string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode image import state: %w", err)
	}
	if err := atomicfile.Write(p, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("image import state: %w", err)
	}
	return nil
}
