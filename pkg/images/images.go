// Package images imports image archives (the air-gap images and the embedded
// pause image) into containerd's k8s.io namespace, where the CRI plugin and
// so kubelet find them, and unpacks them for the node's snapshotter so the
// first pod start does not have to.
//
// Archives are docker-archive (`docker save`, manifest.json with RepoTags) or
// OCI image layout tars (index.json naming each image with the
// io.containerd.image.name or org.opencontainers.image.ref.name annotation),
// plain or compressed with zstd or gzip (told from the first bytes, not the
// name). Nothing is ever pulled.
//
// ImportDir remembers what it imported in a small JSON state file (path,
// size and modification time of each archive, and the images it held) and
// skips unchanged archives on the next start, unless one of their images has
// gone from containerd.
package images

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/klauspost/compress/zstd"
)

// Defaults for the Importer's optional fields.
const (
	DefaultNamespace        = "k8s.io"
	DefaultSnapshotter      = "overlayfs"
	DefaultProgressInterval = 5 * time.Second
)

// Labels the CRI plugin understands. Imported images are marked as managed
// by CRI and pinned: nothing can be pulled again on an air-gapped node, so
// kubelet's image garbage collection must never remove them.
const (
	criImageLabel       = "io.cri-containerd.image"
	criImageLabelValue  = "managed"
	criPinnedLabel      = "io.cri-containerd.pinned"
	criPinnedLabelValue = "pinned"
)

// Importer imports image archives into containerd. Create it with New; the
// optional fields may be changed before first use.
type Importer struct {
	client    *client.Client
	statePath string
	log       *slog.Logger

	// Namespace is the containerd namespace, default "k8s.io".
	Namespace string
	// Snapshotter is the snapshotter images are unpacked for, default
	// "overlayfs" (use what the CRI plugin is configured with).
	Snapshotter string
	// Platform selects the content imported and unpacked; default
	// platforms.Default(), the host's platform.
	Platform platforms.MatchComparer
	// ProgressInterval is how often a long import logs its progress,
	// default 5 s.
	ProgressInterval time.Duration

	mu sync.Mutex // serialises imports and state file updates
}

// New returns an Importer that talks to containerd through c and keeps its
// state in statePath (created 0600 when first written). A nil logger
// discards logs.
func New(c *client.Client, statePath string, logger *slog.Logger) *Importer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Importer{client: c, statePath: statePath, log: logger}
}

// Connect dials containerd's socket at address; the caller closes the client.
func Connect(address string) (*client.Client, error) {
	c, err := client.New(address, client.WithDefaultNamespace(DefaultNamespace))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	return c, nil
}

func (im *Importer) namespace() string {
	if im.Namespace != "" {
		return im.Namespace
	}
	return DefaultNamespace
}

func (im *Importer) snapshotter() string {
	if im.Snapshotter != "" {
		return im.Snapshotter
	}
	return DefaultSnapshotter
}

func (im *Importer) platform() platforms.MatchComparer {
	if im.Platform != nil {
		return im.Platform
	}
	return platforms.Default()
}

func (im *Importer) progressInterval() time.Duration {
	if im.ProgressInterval > 0 {
		return im.ProgressInterval
	}
	return DefaultProgressInterval
}

// IsArchive reports whether a file name looks like an image archive
// ImportDir imports: *.tar, *.tar.zst, *.tar.gz or *.tgz.
func IsArchive(name string) bool {
	for _, ext := range []string{".tar", ".tar.zst", ".tar.gz", ".tgz"} {
		if strings.HasSuffix(name, ext) && len(name) > len(ext) {
			return true
		}
	}
	return false
}

// ImportDir imports every image archive in dir (not its subdirectories),
// in name order. Archives unchanged since their last import (same size and
// modification time) whose images are all still in containerd are skipped.
// A bad archive does not stop the others: the returned error joins one
// error per failed archive, each naming its file. A missing dir is not an
// error.
func (im *Importer) ImportDir(ctx context.Context, dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		im.log.Debug("no image archive directory", "dir", dir)
		return nil
	}
	if err != nil {
		return fmt.Errorf("read image archive directory: %w", err)
	}
	var files []string
	for _, e := range entries {
		if IsArchive(e.Name()) {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	return im.importFiles(ctx, files, dir)
}

// ImportFiles imports the given archive files like ImportDir imports the
// files of a directory: unchanged archives are skipped, and one bad archive
// does not stop the others.
func (im *Importer) ImportFiles(ctx context.Context, files []string) error {
	return im.importFiles(ctx, files, "")
}

// importFiles imports files and, when dir is set, forgets the state of
// archives that were removed from dir.
func (im *Importer) importFiles(ctx context.Context, files []string, dir string) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	ctx = namespaces.WithNamespace(ctx, im.namespace())

	st, err := loadState(im.statePath)
	if err != nil {
		// A broken state file only costs a re-import.
		im.log.Warn("ignoring unreadable image import state", "path", im.statePath, "err", err)
		st = newState()
	}

	var (
		errs     []error
		seen     = map[string]bool{}
		imported int
		skipped  int
		changed  bool
		start    = time.Now()
	)
	for _, p := range files {
		fi, err := os.Stat(p) // follow symlinks
		if err != nil {
			errs = append(errs, fmt.Errorf("image archive %s: %w", p, err))
			continue
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		seen[p] = true
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}

		if prev, ok := st.Files[p]; ok && prev.Size == fi.Size() && prev.ModTime.Equal(fi.ModTime()) {
			missing, err := im.missingImages(ctx, prev.Images)
			if err != nil {
				errs = append(errs, fmt.Errorf("image archive %s: check images: %w", p, err))
				continue
			}
			if len(missing) == 0 {
				im.log.Debug("image archive unchanged, skipped", "file", p, "images", len(prev.Images))
				skipped++
				continue
			}
			im.log.Info("image archive unchanged but images are missing from containerd, importing again", "file", p, "missing", missing)
		}

		names, err := im.importFile(ctx, p, fi.Size())
		if err != nil {
			errs = append(errs, err)
			if _, ok := st.Files[p]; ok {
				delete(st.Files, p)
				changed = true
			}
			continue
		}
		st.Files[p] = fileState{Size: fi.Size(), ModTime: fi.ModTime(), Images: names}
		changed = true
		imported++
	}

	// Forget archives that were removed from dir.
	for p := range st.Files {
		if dir != "" && filepath.Dir(p) == filepath.Clean(dir) && !seen[p] {
			delete(st.Files, p)
			changed = true
		}
	}
	if changed {
		if err := st.save(im.statePath); err != nil {
			errs = append(errs, err)
		}
	}
	if imported > 0 || len(errs) > 0 {
		where := dir
		if where == "" {
			where = strings.Join(files, ", ")
		}
		im.log.Info("image archives processed", "from", where, "imported", imported, "skipped", skipped,
			"failed", len(errs), "took", time.Since(start).Round(time.Millisecond))
	}
	return errors.Join(errs...)
}

// Missing returns the images among refs (normalised like kubelet does:
// "coredns:1" is "docker.io/library/coredns:1") that containerd does not
// have, unpacked, for this node.
func (im *Importer) Missing(ctx context.Context, refs []string) ([]string, error) {
	ctx = namespaces.WithNamespace(ctx, im.namespace())
	names := make([]string, 0, len(refs))
	for _, r := range refs {
		named, err := reference.ParseDockerRef(r)
		if err != nil {
			return nil, fmt.Errorf("image reference %q: %w", r, err)
		}
		names = append(names, named.String())
	}
	return im.missingImages(ctx, names)
}

// importFile imports one archive file and returns the names of its images.
// Errors name the file.
func (im *Importer) importFile(ctx context.Context, path string, size int64) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("image archive %s: %w", path, err)
	}
	defer f.Close()

	start := time.Now()
	counter := &countingReader{r: f}
	stop := im.reportProgress(path, size, counter)
	names, err := im.importStream(ctx, counter)
	stop()
	if err != nil {
		return nil, fmt.Errorf("image archive %s: %w", path, err)
	}
	im.log.Info("imported image archive", "file", filepath.Base(path), "size", size,
		"took", time.Since(start).Round(time.Millisecond), "images", names)
	return names, nil
}

// ImportReader imports one archive from r (for an archive embedded in the
// binary, such as the pause image); name is used in logs and errors. It is
// skipped when every image the archive names already exists in containerd
// and is unpacked. The archive is read once to learn its image names and
// kept in memory (or in a temporary file when it is large) for the import.
func (im *Importer) ImportReader(ctx context.Context, name string, r io.Reader) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	ctx = namespaces.WithNamespace(ctx, im.namespace())

	buf, err := spool(r)
	if err != nil {
		return fmt.Errorf("image archive %s: %w", name, err)
	}
	defer buf.Close()

	rd, err := buf.Reader()
	if err != nil {
		return fmt.Errorf("image archive %s: %w", name, err)
	}
	names, err := archiveImageNames(rd, im.platform())
	if err != nil {
		return fmt.Errorf("image archive %s: %w", name, err)
	}
	if len(names) > 0 {
		missing, err := im.missingImages(ctx, names)
		if err != nil {
			return fmt.Errorf("image archive %s: check images: %w", name, err)
		}
		if len(missing) == 0 {
			im.log.Debug("images already present, skipped", "archive", name, "images", names)
			return nil
		}
	}

	rd, err = buf.Reader()
	if err != nil {
		return fmt.Errorf("image archive %s: %w", name, err)
	}
	start := time.Now()
	counter := &countingReader{r: rd}
	stop := im.reportProgress(name, buf.Size(), counter)
	imported, err := im.importStream(ctx, counter)
	stop()
	if err != nil {
		return fmt.Errorf("image archive %s: %w", name, err)
	}
	im.log.Info("imported image archive", "file", name, "size", buf.Size(),
		"took", time.Since(start).Round(time.Millisecond), "images", imported)
	return nil
}

// importStream imports a (possibly compressed) archive, labels its images
// for CRI and unpacks them. It returns the image names, sorted.
func (im *Importer) importStream(ctx context.Context, r io.Reader) ([]string, error) {
	tr, closeFn, err := decompress(r)
	if err != nil {
		return nil, err
	}
	defer closeFn()

	ctx, done, err := im.client.WithLease(ctx)
	if err != nil {
		return nil, fmt.Errorf("create lease: %w", err)
	}
	defer func() { _ = done(context.WithoutCancel(ctx)) }()

	imgs, err := im.client.Import(ctx, tr,
		client.WithImportPlatform(im.platform()),
		client.WithImageRefTranslator(translateOCIRefName),
		client.WithImageLabels(map[string]string{
			criImageLabel:  criImageLabelValue,
			criPinnedLabel: criPinnedLabelValue,
		}),
	)
	if errors.Is(err, tar.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) || err != nil && strings.Contains(err.Error(), "unrecognized image format") {
		return nil, fmt.Errorf("not an image archive, or a damaged one (want a docker save or OCI layout tar, optionally gzip or zstd compressed): %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	// Drain what the importer did not read (tar padding, trailing
	// blocks) so a truncated or corrupt compressed stream is noticed.
	if _, err := io.Copy(io.Discard, tr); err != nil {
		return nil, fmt.Errorf("read archive: %w", err)
	}
	if len(imgs) == 0 {
		return nil, errors.New("the archive names no image (no RepoTags in manifest.json, no io.containerd.image.name or full org.opencontainers.image.ref.name in index.json)")
	}

	var names []string
	unpacked := map[string]bool{}
	for _, img := range imgs {
		if p := img.Target.Platform; p != nil && !im.platform().Match(*p) {
			im.log.Debug("image is for another platform, not unpacked", "image", img.Name, "platform", platforms.Format(*p))
			continue
		}
		names = append(names, img.Name)
		if unpacked[img.Target.Digest.String()] {
			continue
		}
		cimg := client.NewImageWithPlatform(im.client, img, im.platform())
		if err := cimg.Unpack(ctx, im.snapshotter()); err != nil {
			if errdefs.IsNotFound(err) {
				err = fmt.Errorf("%w (the archive lacks a blob its manifest names, or the blob is corrupt)", err)
			}
			err = fmt.Errorf("unpack %s for snapshotter %s: %w", img.Name, im.snapshotter(), err)
			return nil, errors.Join(err, im.deleteUnpacked(ctx, imgs, unpacked))
		}
		unpacked[img.Target.Digest.String()] = true
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("the archive has no image for this platform (%s)", platforms.Format(platforms.DefaultSpec()))
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// deleteUnpacked removes the images of a failed import that were not
// unpacked, so kubelet does not find an image record whose content is
// broken or missing.
func (im *Importer) deleteUnpacked(ctx context.Context, imgs []images.Image, unpacked map[string]bool) error {
	var errs []error
	for _, img := range imgs {
		if unpacked[img.Target.Digest.String()] {
			continue
		}
		err := im.client.ImageService().Delete(ctx, img.Name)
		if err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove broken image %s: %w", img.Name, err))
		}
	}
	return errors.Join(errs...)
}

// missingImages returns the names that are not in containerd or are not
// unpacked for the snapshotter.
func (im *Importer) missingImages(ctx context.Context, names []string) ([]string, error) {
	var missing []string
	is := im.client.ImageService()
	for _, n := range names {
		img, err := is.Get(ctx, n)
		if errdefs.IsNotFound(err) {
			missing = append(missing, n)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look up image %s: %w", n, err)
		}
		ok, err := client.NewImageWithPlatform(im.client, img, im.platform()).IsUnpacked(ctx, im.snapshotter())
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("check image %s is unpacked: %w", n, err)
		}
		if !ok {
			missing = append(missing, n)
		}
	}
	return missing, nil
}

// translateOCIRefName turns an org.opencontainers.image.ref.name annotation
// into an image name. Only full references ("docker.io/library/x:1",
// "x:1") make names; a bare tag ("latest") names no repository and is
// dropped.
func translateOCIRefName(ref string) string {
	if !strings.ContainsAny(ref, "/:@") {
		return ""
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return ""
	}
	return named.String()
}

// ---- decompression

// decompress returns a reader of the tar stream inside r, which may be
// plain, zstd or gzip compressed (told from its magic number).
func decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 64*1024)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("read archive: %w", err)
	}
	switch {
	case len(magic) >= 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { _ = zr.Close() }, nil
	default:
		return br, func() {}, nil
	}
}

// ---- progress

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// reportProgress logs how much of an archive has been read every
// ProgressInterval until the returned stop function is called.
func (im *Importer) reportProgress(name string, size int64, c *countingReader) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	interval := im.progressInterval()
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				read := c.n.Load()
				args := []any{"file", filepath.Base(name), "read", read, "size", size,
					"elapsed", time.Since(start).Round(time.Second)}
				if size > 0 {
					args = append(args, "percent", read*100/size)
				}
				im.log.Info("importing image archive", args...)
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
