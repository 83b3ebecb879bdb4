// Package bundle holds the helper executables containerd must exec (runc,
// containerd-shim-runc-v2 and the CNI plugins) and unpacks them on start.
//
// scripts/build-helpers.sh (make helpers) builds them from their Go modules and
// packs them into assets/helpers-<GOARCH>.tar.zst, a deterministic
// zstd-compressed tar, next to assets/helpers-<GOARCH>.tar.zst.sha256 (its
// sha256 in hex). With the build tag bramble_assets (the Makefile sets it)
// the embed_<arch>.go files embed the pair for the target architecture; a
// build without the tag (plain `go build ./...` or `go test ./pkg/...` on a
// fresh clone) or for another architecture leaves the archive empty and
// Extract returns ErrNoHelpers.
//
// Extract unpacks the archive into <data-dir>/data/<hash>/bin, where <hash> is
// the first 16 hex digits of the archive's sha256, and points
// <data-dir>/data/current at it.
package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync"

	"github.com/bramble-pi/bramble/pkg/unpack"
)

// ErrNoHelpers is returned by Extract when this binary was built without the
// helper archive (no tag bramble_assets, or an architecture it is not built for).
var ErrNoHelpers = errors.New("bramble was built without the helper binaries archive: build it with make (which embeds it with the tag bramble_assets)")

// archiveSum returns the full hex sha256 of the embedded archive: the value the
// build wrote next to it when it looks like one (no hashing at start: the Pi 3
// and 4 have no SHA instructions), else computed once. Extract checks the real
// hash before unpacking, so a stale sidecar cannot go unnoticed.
var archiveSum = sync.OnceValue(func() string {
	if len(archive) == 0 {
		return ""
	}
	if f := strings.Fields(archiveSHA256); len(f) > 0 && unpack.IsHexSHA256(f[0]) {
		return f[0]
	}
	sum := sha256.Sum256(archive)
	return hex.EncodeToString(sum[:])
})

// Hash returns the content hash naming the extraction directory (the first 16
// hex digits of the embedded archive's sha256), or "" when there is no archive.
func Hash() string {
	s := archiveSum()
	if len(s) < unpack.HashLen {
		return ""
	}
	return s[:unpack.HashLen]
}
