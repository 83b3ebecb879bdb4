// Package launcher is the small front of a release binary: it unpacks the
// real bramble binary, embedded zstd-compressed, once into
// <data-dir>/data/<hash>/bin/bramble (package unpack: atomic, locked,
// checked) and execs it with the same argv and environment, so a kubectl,
// crictl or ctr symlink still selects that tool and /proc/self/exe is the
// real binary for the processes bramble re-executes.
package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bramble-pi/bramble/pkg/layout"
	"github.com/bramble-pi/bramble/pkg/unpack"
)

const binName = "bramble"

// ExecutableEnv names the variable through which the launcher tells the
// real binary where the launcher itself is (the file the user installed):
// bramble looks for air-gap image tarballs beside it.
const ExecutableEnv = "BRAMBLE_LAUNCHER_PATH"

// SlowAfter is how long the first extraction may take before the launcher
// says what it is doing (a Pi 3 on an SD card needs several seconds).
var SlowAfter = 2 * time.Second

// Exec unpacks the payload if needed and execs it with argv and env. It
// returns only on failure.
func Exec(payload unpack.Archive, argv, env []string, stderr io.Writer) error {
	bin, err := Unpack(payload, DataDirs(argv, env, os.Geteuid()), stderr)
	if err != nil {
		return err
	}
	if self, err := os.Executable(); err == nil && (layout.Lookup{Env: env}).Getenv(ExecutableEnv) == "" {
		env = append(env, ExecutableEnv+"="+self)
	}
	if err := syscall.Exec(bin, argv, env); err != nil {
		return fmt.Errorf("exec %s: %w", bin, err)
	}
	return nil
}

// Unpack installs the payload under the first data dir that works (the
// later ones are fallbacks) and returns the path of the bramble binary.
func Unpack(payload unpack.Archive, dataDirs []string, stderr io.Writer) (string, error) {
	if len(payload.Data) == 0 {
		return "", errors.New("this bramble launcher was built without its payload (build it with make release)")
	}
	payload.What = "bramble binary"
	// Only warnings (a damaged copy being replaced) are worth a line.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var errs []error
	for _, d := range dataDirs {
		base := layout.New(d).Data()
		done := slowNotice(stderr, payload, base)
		dir, err := unpack.Install(base, payload, log)
		done()
		if err == nil {
			return filepath.Join(dir, "bin", binName), nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("cannot unpack the bramble binary: %w", errors.Join(errs...))
}

// slowNotice prints a line if the extraction is still running after
// SlowAfter, and how long it took once done; nothing when it is quick.
func slowNotice(w io.Writer, payload unpack.Archive, base string) (done func()) {
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	printed := make(chan bool, 1)
	go func() {
		select {
		case <-ctx.Done():
			printed <- false
		case <-time.After(SlowAfter):
			fmt.Fprintf(w, "bramble: first start: unpacking %d MB into %s ...\n",
				len(payload.Data)>>20, payload.Dir(base))
			printed <- true
		}
	}()
	return func() {
		cancel()
		if <-printed {
			fmt.Fprintf(w, "bramble: unpacked in %s\n", time.Since(start).Round(100*time.Millisecond))
		}
	}
}

// DataDirs returns where to unpack, in order of preference: the data dir
// bramble will use (--data-dir/-d, BRAMBLE_DATA_DIR, the config file's
// data-dir, /var/lib/bramble) and, for a non-root user, a per-user cache dir
// as the fallback when that one is not writable (a root install already
// unpacked there is used read-only).
func DataDirs(argv, env []string, euid int) []string {
	l := layout.Lookup{Args: argv, Env: env}
	dir := l.DataDir()
	dirs := []string{dir}
	if euid != 0 {
		if cache := userCacheDir(l.Getenv); cache != "" && cache != dir {
			dirs = append(dirs, cache)
		}
	}
	return dirs
}

func userCacheDir(getenv func(string) string) string {
	if d := getenv("XDG_CACHE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, binName)
	}
	if h := getenv("HOME"); filepath.IsAbs(h) {
		return filepath.Join(h, ".cache", binName)
	}
	return ""
}
