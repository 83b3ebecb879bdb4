// Package unpack installs a zstd-compressed tar archive once into a
// content-addressed directory, <base>/<first 16 hex digits of its sha256>,
// atomically and safely against concurrent processes, and checks it cheaply
// on every later start.
//
// The archive's sha256 is checked before unpacking and the zstd frame
// checksum while reading; every file's size, mode, timestamps and sha256 go
// into a manifest written last, so a half-written or modified directory is
// noticed (cheaply: size, mode and timestamps) and unpacked again. Concurrent
// callers are serialised by a flock on <base>/.lock, and a temp dir renamed
// into place keeps even unlocked racers safe.
package unpack

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Names under base.
const (
	manifestName = ".manifest.json" // in <hash>/, written last
	// LockName is the flock file serialising installs into one base.
	LockName = ".lock"
	// TempPrefix starts the names of entries being written (or left by a
	// crash); entries older than ten minutes are removed by the next install.
	TempPrefix = ".tmp-"
	oldPrefix  = ".old-" // a damaged <hash> dir being replaced
)

// HashLen is the number of hex digits of the archive's sha256 in the directory name.
const HashLen = 16

const (
	dirMode  = 0o755
	fileMode = 0o755 // every entry is an executable; nothing secret in them

	maxUnpacked  = 1 << 30   // refuse archives that unpack to more than this
	maxWindow    = 128 << 20 // zstd window limit (level 19 uses 8 MiB, --long=27 128 MiB)
	lockPoll     = 20 * time.Millisecond
	lockPollMax  = 250 * time.Millisecond
	staleTempAge = 10 * time.Minute
)

// lockTimeout bounds the wait for another process installing into the same base.
var lockTimeout = 5 * time.Minute

// useLock is cleared by tests to exercise the lock-free rename protocol.
var useLock = true

// errNotExtracted marks a hash dir that does not exist yet (first start).
var errNotExtracted = errors.New("not extracted")

type manifest struct {
	Archive string         `json:"archive"` // hex sha256 of the compressed archive
	Files   []manifestFile `json:"files"`
}

type manifestFile struct {
	Path   string `json:"path"` // slash-separated, relative to the hash dir
	Size   int64  `json:"size"`
	Mode   uint32 `json:"mode"`
	SHA256 string `json:"sha256"`
	// Timestamps as written, in ns: any write, chmod or utimes after
	// extraction moves ctime, so a cheap stat notices a tampered file.
	MTime int64 `json:"mtime"`
	CTime int64 `json:"ctime"`
}

// Archive is a zstd-compressed tar and the hex sha256 of its compressed bytes.
type Archive struct {
	Data   []byte
	SHA256 string
	// What names the contents in logs and errors ("helper binaries").
	What string
}

// Dir returns the directory Install unpacks a into: base/<hash>.
func (a Archive) Dir(base string) string {
	return filepath.Join(base, a.SHA256[:min(HashLen, len(a.SHA256))])
}

// Install makes sure a is unpacked under base/<hash> and returns that
// directory (absolute).
//
// When the directory is already there and intact (every file of its manifest
// present with the recorded size, mode and timestamps) it logs nothing above
// Debug and takes no lock. Otherwise it unpacks the archive into a temporary
// directory beside it, syncs it, writes the manifest last and renames it into
// place, replacing a damaged copy.
//
// Install checks sizes and timestamps, not contents: Verify hashes every file.
func Install(base string, a Archive, log *slog.Logger) (string, error) {
	if a.What == "" {
		a.What = "archive"
	}
	if len(a.Data) == 0 {
		return "", fmt.Errorf("%s: empty archive", a.What)
	}
	if !IsHexSHA256(a.SHA256) {
		return "", fmt.Errorf("%s: bad archive hash %q", a.What, a.SHA256)
	}
	if base == "" {
		return "", fmt.Errorf("%s: empty directory name", a.What)
	}
	// Callers put these directories in PATHs: make them absolute.
	base, absErr := filepath.Abs(base)
	if absErr != nil {
		return "", fmt.Errorf("%s: %w", a.What, absErr)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	target := a.Dir(base)

	// Fast path, no lock: intact.
	if checkDir(target, a.SHA256, false) == nil {
		log.Debug(a.What+" present", "dir", target)
		return target, nil
	}

	if err := os.MkdirAll(base, dirMode); err != nil {
		return "", fmt.Errorf("%s: create %s: %w", a.What, base, err)
	}
	unlock, err := func() (func(), error) {
		if !useLock {
			return nil, errors.New("locking disabled")
		}
		return lockDir(base)
	}()
	locked := err == nil
	if locked {
		defer unlock()
	} else {
		// e.g. a filesystem without locks: the rename protocol still holds.
		log.Warn(a.What+": extracting without a lock", "dir", base, "err", err)
	}

	if err := checkDir(target, a.SHA256, false); err != nil {
		if !errors.Is(err, errNotExtracted) {
			log.Warn(a.What+" damaged, extracting again", "dir", target, "err", err)
		}
		if locked {
			removeStale(base, log)
		}
		if err := install(base, target, a, log); err != nil {
			return "", err
		}
	}
	return target, nil
}

// Verify fully checks what Install unpacked for the archive with hex sha256
// sum under base: the manifest, then the sha256 of every file. It repairs
// nothing; remove the directory and call Install to unpack again.
func Verify(base, sum string) error {
	if !IsHexSHA256(sum) {
		return fmt.Errorf("bad archive hash %q", sum)
	}
	return checkDir(filepath.Join(base, sum[:HashLen]), sum, true)
}

// IsHexSHA256 reports whether s is a lower-case hex sha256.
func IsHexSHA256(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// install unpacks a into a temp dir and renames it to target.
func install(base, target string, a Archive, log *slog.Logger) error {
	start := time.Now()
	log.Info("extracting "+a.What, "dir", target, "archive_bytes", len(a.Data))

	got := sha256.Sum256(a.Data)
	if hex.EncodeToString(got[:]) != a.SHA256 {
		return fmt.Errorf("%s: archive sha256 is %x, want %s (stale build?)", a.What, got, a.SHA256)
	}

	tmp, err := os.MkdirTemp(base, TempPrefix)
	if err != nil {
		return fmt.Errorf("%s: %w", a.What, err)
	}
	defer func() {
		if tmp != "" {
			_ = os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, dirMode); err != nil {
		return fmt.Errorf("%s: %w", a.What, err)
	}
	m, total, err := unpack(a.Data, tmp)
	if err != nil {
		return fmt.Errorf("%s: unpack into %s: %w", a.What, tmp, err)
	}
	m.Archive = a.SHA256
	if err := writeManifest(tmp, m); err != nil {
		return fmt.Errorf("%s: %w", a.What, err)
	}
	if err := SyncDir(tmp); err != nil {
		return fmt.Errorf("%s: %w", a.What, err)
	}

	if err := os.Rename(tmp, target); err != nil {
		// target exists: another process won the race, or it is damaged.
		if checkDir(target, a.SHA256, false) == nil {
			log.Debug(a.What+" extracted concurrently by another process", "dir", target)
			return nil
		}
		old := filepath.Join(base, oldPrefix+rand.Text())
		if err := os.Rename(target, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: move damaged %s aside: %w", a.What, target, err)
		}
		defer func() { _ = os.RemoveAll(old) }()
		if err := os.Rename(tmp, target); err != nil {
			if checkDir(target, a.SHA256, false) == nil {
				return nil
			}
			return fmt.Errorf("%s: %w", a.What, err)
		}
	}
	tmp = ""
	if err := SyncDir(base); err != nil {
		return fmt.Errorf("%s: %w", a.What, err)
	}
	log.Info("extracted "+a.What, "dir", target,
		"files", len(m.Files), "bytes", total, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// unpack writes the tar.zst in data below dir and returns the manifest of the
// regular files it wrote. Only relative paths that stay below dir, regular
// files and directories are accepted.
func unpack(data []byte, dir string) (*manifest, int64, error) {
	// One synchronous decoder is the fastest and leanest here (measured:
	// 50 ms and 8 MiB for the 39 MB amd64 tar, against 75-90 ms with 2-4).
	dec, err := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		return nil, 0, err
	}
	defer dec.Close()

	m := &manifest{}
	seen := map[string]bool{}
	dirs := map[string]bool{}
	var total int64
	tr := tar.NewReader(dec)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("read archive: %w", err)
		}
		rel, err := entryPath(hdr.Name)
		if err != nil {
			return nil, 0, err
		}
		if rel == "." {
			continue
		}
		if seen[rel] {
			return nil, 0, fmt.Errorf("archive entry %q appears twice", hdr.Name)
		}
		seen[rel] = true
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := mkdir(dst); err != nil {
				return nil, 0, err
			}
			markDirs(dirs, dir, dst)
		case tar.TypeReg:
			if hdr.Size < 0 || total+hdr.Size > maxUnpacked {
				return nil, 0, fmt.Errorf("archive entry %q: unpacked size over %d bytes", hdr.Name, maxUnpacked)
			}
			total += hdr.Size
			if err := mkdir(filepath.Dir(dst)); err != nil {
				return nil, 0, err
			}
			markDirs(dirs, dir, filepath.Dir(dst))
			f, err := writeFile(dst, tr, hdr.Size)
			if err != nil {
				return nil, 0, fmt.Errorf("archive entry %q: %w", hdr.Name, err)
			}
			f.Path = rel
			m.Files = append(m.Files, f)
		default:
			return nil, 0, fmt.Errorf("archive entry %q: unsupported type %q", hdr.Name, hdr.Typeflag)
		}
	}
	// Read to the end of the zstd frame so its checksum is verified too.
	if _, err := io.Copy(io.Discard, dec); err != nil {
		return nil, 0, fmt.Errorf("read archive: %w", err)
	}
	if len(m.Files) == 0 {
		return nil, 0, errors.New("archive holds no files")
	}
	// Make the new directory entries durable before the rename publishes them
	// (dir itself is synced by the caller, after the manifest).
	for d := range dirs {
		if err := SyncDir(d); err != nil {
			return nil, 0, err
		}
	}
	return m, total, nil
}

// entryPath validates a tar entry name and returns it cleaned, slash-separated.
func entryPath(name string) (string, error) {
	clean := path.Clean(strings.TrimSuffix(name, "/"))
	if name == "" || path.IsAbs(name) || strings.ContainsRune(name, '\\') ||
		strings.ContainsRune(name, 0) || slices.Contains(strings.Split(name, "/"), "..") ||
		(clean != "." && !filepath.IsLocal(filepath.FromSlash(clean))) {
		return "", fmt.Errorf("archive entry %q: path escapes the target directory", name)
	}
	if clean == manifestName {
		return "", fmt.Errorf("archive entry %q: reserved name", name)
	}
	return clean, nil
}

// markDirs records d and its ancestors below root as needing an fsync.
func markDirs(dirs map[string]bool, root, d string) {
	for ; d != root && len(d) > len(root) && !dirs[d]; d = filepath.Dir(d) {
		dirs[d] = true
	}
}

func mkdir(dir string) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return err
	}
	return os.Chmod(dir, dirMode) // whatever the umask
}

// writeFile creates dst (which must not exist) with size bytes from r, synced.
func writeFile(dst string, r io.Reader, size int64) (manifestFile, error) {
	var mf manifestFile
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return mf, err
	}
	defer f.Close()
	if err := f.Chmod(fileMode); err != nil {
		return mf, err
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), r, size); err != nil {
		return mf, err
	}
	if err := f.Sync(); err != nil {
		return mf, err
	}
	if err := f.Close(); err != nil {
		return mf, err
	}
	fi, err := os.Lstat(dst)
	if err != nil {
		return mf, err
	}
	mf.Size = fi.Size()
	mf.Mode = uint32(fi.Mode().Perm())
	mf.SHA256 = hex.EncodeToString(h.Sum(nil))
	mf.MTime, mf.CTime = fileTimes(fi)
	return mf, nil
}

func fileTimes(fi fs.FileInfo) (mtime, ctime int64) {
	mtime = fi.ModTime().UnixNano()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ctime = st.Ctim.Nano()
	}
	return mtime, ctime
}

func writeManifest(dir string, m *manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(dir, manifestName)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", p, err)
	}
	return f.Close()
}

// checkDir checks the hash dir target against its manifest: cheaply (type,
// size, mode and timestamps of every file) or, with full, also the sha256 of
// every file. It wraps errNotExtracted when target does not exist.
func checkDir(target, sum string, full bool) error {
	b, err := os.ReadFile(filepath.Join(target, manifestName))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s: %w", target, errNotExtracted)
			}
			return fmt.Errorf("%s: no manifest (incomplete extraction)", target)
		}
		return fmt.Errorf("read manifest: %w", err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%s: bad manifest: %w", target, err)
	}
	if m.Archive != sum {
		return fmt.Errorf("%s: manifest is for archive %.16s", target, m.Archive)
	}
	if len(m.Files) == 0 {
		return fmt.Errorf("%s: empty manifest", target)
	}
	for _, f := range m.Files {
		if _, err := entryPath(f.Path); err != nil || f.Path == "." {
			return fmt.Errorf("%s: bad manifest entry %q", target, f.Path)
		}
		p := filepath.Join(target, filepath.FromSlash(f.Path))
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		mt, ct := fileTimes(fi)
		switch {
		case !fi.Mode().IsRegular():
			return fmt.Errorf("%s: not a regular file", p)
		case fi.Size() != f.Size:
			return fmt.Errorf("%s: size %d, want %d", p, fi.Size(), f.Size)
		case uint32(fi.Mode().Perm()) != f.Mode:
			return fmt.Errorf("%s: mode %#o, want %#o", p, fi.Mode().Perm(), f.Mode)
		case !sameTime(mt, f.MTime) || !sameTime(ct, f.CTime):
			return fmt.Errorf("%s: modified after extraction", p)
		}
		if full {
			if err := checkSHA256(p, f.SHA256); err != nil {
				return err
			}
		}
	}
	return nil
}

// sameTime reports whether a timestamp read back (got) matches the one
// recorded at extraction (want), allowing for filesystems that keep less
// than nanosecond precision on disk (ext4 with 128-byte inodes, NFS, ...):
// got may be want truncated, never later. Any write or chmod after the
// extraction moves ctime past want.
func sameTime(got, want int64) bool {
	return got <= want && want-got < int64(time.Second)
}

func checkSHA256(p, want string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s: sha256 %.16s, want %.16s", p, got, want)
	}
	return nil
}

// removeStale deletes temp and replaced dirs left by crashed extractions.
// Called with the lock held, so no live extraction owns them; the age check
// also spares those of a racer that could not take the lock.
func removeStale(base string, log *slog.Logger) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, TempPrefix) && !strings.HasPrefix(n, oldPrefix) {
			continue
		}
		if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < staleTempAge {
			continue
		}
		p := filepath.Join(base, n)
		if err := os.RemoveAll(p); err != nil {
			log.Warn("cannot remove stale temp dir", "path", p, "err", err)
		} else {
			log.Debug("removed stale temp dir", "path", p)
		}
	}
}

// lockDir takes an exclusive flock on base/.lock, polling so that a stuck
// holder produces an error instead of a hang.
func lockDir(base string) (unlock func(), err error) {
	p := filepath.Join(base, LockName)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	deadline := time.Now().Add(lockTimeout)
	wait := lockPoll
	for {
		err = syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(fd, syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			_ = f.Close()
			return nil, fmt.Errorf("flock %s: %w", p, err)
		}
		if time.Now().After(deadline) {
			_ = f.Close()
			return nil, fmt.Errorf("flock %s: still held by another process after %s", p, lockTimeout)
		}
		time.Sleep(wait)
		wait = min(2*wait, lockPollMax)
	}
}

// SyncDir fsyncs a directory, making the entries created in it durable.
func SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
