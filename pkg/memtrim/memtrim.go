// Package memtrim gives back, once start-up is over, the memory only
// start-up needed: the free heap of its peak and the pages of the
// executable it read. bramble and its containerd use it.
package memtrim

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bramble-pi/bramble/pkg/procmaps"
)

// Delay is how long after start-up Release runs: the add-ons' first apply
// and the first pods are behind it.
const Delay = 2 * time.Minute

// After runs Release after delay, unless ctx ends first.
func After(ctx context.Context, delay time.Duration, log *slog.Logger) {
	go func() {
		select {
		case <-ctx.Done():
		case <-time.After(delay):
			Release(log)
		}
	}()
}

// Release gives back what only start-up needed, once the node (or the
// control plane) is up:
//
//   - the free heap of the start-up peak (OpenAPI specs built, schemes
//     registered, manifests decoded) goes back to the kernel at once
//     instead of over minutes;
//   - the pages of bramble's executable that start-up read (the package
//     initialisers of every Kubernetes component, code run once, and the
//     kernel's read-ahead and fault-around neighbours of both: ~140 MiB of
//     a 200 MiB binary) are paged out, and the mappings are marked for
//     random access so that what is used later comes back a page at a
//     time, not 64-128 KiB around each fault. What stays resident is the
//     code an idle node runs (measured: bench, "resident by section").
//
// The cost: code that has not run since comes back from disk when it does
// (a rare path, a restart soon after on a machine whose page cache was not
// needed elsewhere). Errors are logged at debug level: this only saves
// memory.
func Release(log *slog.Logger) {
	debug.FreeOSMemory()
	released, err := pageOutExecutable()
	if err != nil {
		log.Debug("start-up pages of the executable kept", "err", err)
		return
	}
	log.Debug("start-up memory released", "executable-mappings-mib", released>>20)
}

// pageOutExecutable pages out the read-only mappings of the running
// executable (code, read-only data, pclntab) and returns their size.
func pageOutExecutable() (uint64, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("executable: %w", err)
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	ranges, err := readOnlyMappings("/proc/self/maps", exe)
	if err != nil {
		return 0, err
	}
	var total uint64
	for _, r := range ranges {
		for _, advice := range []int{unix.MADV_RANDOM, unix.MADV_PAGEOUT} {
			if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(r.Start), uintptr(r.End-r.Start), uintptr(advice)); errno != 0 {
				return total, fmt.Errorf("madvise %#x-%#x (%d): %w", r.Start, r.End, advice, errno)
			}
		}
		total += r.End - r.Start
	}
	return total, nil
}

// readOnlyMappings lists the mappings of file path in a maps file that
// are not writable.
func readOnlyMappings(maps, path string) ([]procmaps.Mapping, error) {
	all, err := procmaps.ReadFile(maps)
	if err != nil {
		return nil, err
	}
	var out []procmaps.Mapping
	for _, m := range all {
		if m.Path == path && !m.Writable() {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no read-only mapping of %s", path)
	}
	return out, nil
}
