// Package atomicfile is bramble's one way to write a file: a reader, or the
// next start after a power cut (a Raspberry Pi's SD card), sees either the
// old contents or the new ones, never a part of them.
package atomicfile

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Write writes data to path atomically with mode perm (exactly, whatever
// the umask): into a temporary file next to it, flushed to the disk, renamed
// over path, then the directory flushed too. The parent directory is
// created with mode 0700 when missing. On error path is left as it was and
// no temporary file remains. When path already holds exactly data with
// mode perm, nothing is written: a start that regenerates the same
// credentials and configuration costs the SD card no writes.
func Write(path string, data []byte, perm fs.FileMode) error {
	if unchanged(path, data, perm) {
		return nil
	}
	return WriteFrom(path, bytes.NewReader(data), perm)
}

// unchanged reports whether path is a regular file with mode perm and
// contents data.
func unchanged(path string, data []byte, perm fs.FileMode) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != perm.Perm() || fi.Size() != int64(len(data)) {
		return false
	}
	old, err := os.ReadFile(path)
	return err == nil && bytes.Equal(old, data)
}

// WriteFrom is Write for contents read from r (a large file is streamed,
// not held in memory).
func WriteFrom(path string, r io.Reader, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if err := writeSync(tmp, r, perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeSync sets the mode of f, copies r into it, flushes and closes it.
func writeSync(f *os.File, r io.Reader, perm fs.FileMode) error {
	err := f.Chmod(perm)
	if err == nil {
		_, err = io.Copy(f, r)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir flushes a directory, so a rename in it survives a power cut.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
