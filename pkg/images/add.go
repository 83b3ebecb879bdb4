package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/distribution/reference"

	"github.com/bramble-pi/bramble/pkg/atomicfile"
)

// ErrNotRunning means containerd does not answer at its socket.
var ErrNotRunning = errors.New("containerd is not running")

// ConnectServing dials containerd at address and checks that it answers,
// so that a command can say plainly when it is not running.
func ConnectServing(ctx context.Context, address string) (*client.Client, error) {
	if _, err := os.Stat(address); err != nil {
		return nil, fmt.Errorf("%w (no socket at %s): start bramble first", ErrNotRunning, address)
	}
	c, err := Connect(address)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if ok, err := c.IsServing(ctx); err != nil || !ok {
		c.Close()
		return nil, fmt.Errorf("%w (nothing answers at %s: %v): start bramble first", ErrNotRunning, address, err)
	}
	return c, nil
}

// Add imports the archive at src right away and keeps a copy of it in dir
// (the directory ImportDir imports at every start), recorded as imported so
// the next start skips it. It returns the image names. Nothing is copied
// when the import fails.
func (im *Importer) Add(ctx context.Context, src, dir string) ([]string, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("image archive %s: %w", src, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("image archive %s: not a regular file", src)
	}
	if !IsArchive(filepath.Base(src)) {
		return nil, fmt.Errorf("image archive %s: the name must end in .tar, .tar.zst, .tar.gz or .tgz (a docker save or OCI layout archive)", src)
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	ctx = namespaces.WithNamespace(ctx, im.namespace())

	names, err := im.importFile(ctx, src, fi.Size())
	if err != nil {
		return nil, err
	}
	dst := filepath.Join(dir, filepath.Base(src))
	if err := copyInto(src, dst); err != nil {
		return names, fmt.Errorf("imported, but not kept for the next start: %w", err)
	}
	kept, err := os.Stat(dst)
	if err != nil {
		return names, err
	}
	st, err := loadState(im.statePath)
	if err != nil {
		im.log.Warn("ignoring unreadable image import state", "path", im.statePath, "err", err)
		st = newState()
	}
	st.Files[dst] = fileState{Size: kept.Size(), ModTime: kept.ModTime(), Images: names}
	return names, st.save(im.statePath)
}

// copyInto copies src to dst atomically (ImportDir never sees a partial
// archive); src already at dst is left as it is.
func copyInto(src, dst string) error {
	sfi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if dfi, err := os.Stat(dst); err == nil && os.SameFile(sfi, dfi) {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := atomicfile.WriteFrom(dst, in, 0o600); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

// Listed is an image of containerd's namespace by name.
type Listed struct {
	Name string
	Size int64 // content for this platform, as stored (compressed layers)
}

// List returns the named images of containerd's k8s.io namespace
// (name:tag; not the digest and ID records the CRI plugin adds), sorted by
// name, with their size for this platform.
func List(ctx context.Context, c *client.Client) ([]Listed, error) {
	ctx = namespaces.WithNamespace(ctx, DefaultNamespace)
	all, err := c.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var out []Listed
	for _, img := range all {
		named, err := reference.ParseNormalizedNamed(img.Name)
		if _, tagged := named.(reference.Tagged); err != nil || !tagged {
			continue
		}
		size, err := client.NewImage(c, img).Size(ctx)
		if err != nil {
			size = -1 // content missing (another platform): size unknown
		}
		out = append(out, Listed{Name: img.Name, Size: size})
	}
	slices.SortFunc(out, func(a, b Listed) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
