package bundle

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/bramble-pi/bramble/pkg/layout"
	"github.com/bramble-pi/bramble/pkg/unpack"
)

// Links under <data-dir>/data.
const (
	currentLink  = "current"  // -> <hash>
	previousLink = "previous" // -> the <hash> current pointed at before
)

// what names the helper archive in logs and errors.
const what = "helper binaries"

// Extract makes sure the embedded helper binaries are unpacked under
// <dataDir>/data/<Hash()>/bin (see package unpack: atomic, locked, checked
// cheaply on every call, silent when nothing changes) and returns that
// directory, pointing <dataDir>/data/current at <Hash()>.
//
// The embedded archive's pages are released afterwards: read once while
// unpacking, they would otherwise stay in bramble's resident memory.
func Extract(dataDir string, log *slog.Logger) (string, error) {
	defer unpack.Release(archive)
	return extract(dataDir, archive, archiveSum(), log)
}

// BinDir is the directory Extract unpacks the helper binaries into, known
// before they are unpacked: the components that exec them can be set up
// while the unpacking runs alongside the control plane.
func BinDir(dataDir string) (string, error) {
	sum := archiveSum()
	if len(archive) == 0 || sum == "" {
		return "", ErrNoHelpers
	}
	if dataDir == "" {
		return "", fmt.Errorf("%s: empty data dir", what)
	}
	return filepath.Join(unpack.Archive{SHA256: sum}.Dir(layout.New(dataDir).Data()), "bin"), nil
}

// Verify fully checks the helper binaries extracted under dataDir: the
// manifest, then the sha256 of every file. It repairs nothing; remove
// <dataDir>/data/<Hash()> and call Extract to unpack again.
func Verify(dataDir string) error {
	sum := archiveSum()
	if sum == "" {
		return ErrNoHelpers
	}
	return unpack.Verify(layout.New(dataDir).Data(), sum)
}

func extract(dataDir string, data []byte, sum string, log *slog.Logger) (string, error) {
	if len(data) == 0 {
		return "", ErrNoHelpers
	}
	if dataDir == "" {
		return "", fmt.Errorf("%s: empty data dir", what)
	}
	dir, err := unpack.Install(layout.New(dataDir).Data(), unpack.Archive{Data: data, SHA256: sum, What: what}, log)
	if err != nil {
		return "", err
	}
	if err := setCurrent(filepath.Dir(dir), filepath.Base(dir)); err != nil {
		return "", err
	}
	return filepath.Join(dir, "bin"), nil
}

// setCurrent points base/current at name (and base/previous at the old target).
func setCurrent(base, name string) error {
	old, err := os.Readlink(filepath.Join(base, currentLink))
	if err == nil && old == name {
		return nil
	}
	if err == nil && old != "" {
		if err := replaceSymlink(base, previousLink, old); err != nil {
			return err
		}
	}
	if err := replaceSymlink(base, currentLink, name); err != nil {
		return err
	}
	if err := unpack.SyncDir(base); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// replaceSymlink atomically makes base/link a symlink to target.
func replaceSymlink(base, link, target string) error {
	tmp := filepath.Join(base, unpack.TempPrefix+"link-"+rand.Text())
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("%s: symlink: %w", what, err)
	}
	if err := os.Rename(tmp, filepath.Join(base, link)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("%s: update %s symlink: %w", what, link, err)
	}
	return nil
}
