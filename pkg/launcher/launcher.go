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
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/bramble-pi/bramble/pkg/unpack"
)

// Defaults shared with pkg/cli (kept here so the launcher stays small).
const (
	defaultDataDir    = "/var/lib/bramble"
	defaultConfigFile = "/etc/bramble/config.yaml"
	binName           = "bramble"
)

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
	if self, err := os.Executable(); err == nil && !hasEnv(env, ExecutableEnv) {
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
		base := filepath.Join(d, "data")
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
	getenv := func(k string) string {
		for i := len(env) - 1; i >= 0; i-- {
			if v, ok := strings.CutPrefix(env[i], k+"="); ok {
				return v
			}
		}
		return ""
	}
	dir, explicit := flagValue(argv, "data-dir", "d")
	if !explicit {
		dir = getenv("BRAMBLE_DATA_DIR")
	}
	if dir == "" {
		cfg, _ := flagValue(argv, "config", "c")
		if cfg == "" {
			cfg = getenv("BRAMBLE_CONFIG_FILE")
		}
		if cfg == "" {
			cfg = defaultConfigFile
		}
		dir = configDataDir(cfg)
	}
	if dir == "" {
		dir = defaultDataDir
	}
	dirs := []string{dir}
	if euid != 0 {
		if cache := userCacheDir(getenv); cache != "" && cache != dir {
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

// flagValue finds --name/-name/-short VALUE or --name=VALUE in bramble's own
// arguments: not in a multi-call invocation (kubectl, crictl, ctr), not
// after "--" or a tool subcommand, whose arguments are that tool's.
func flagValue(argv []string, name, short string) (string, bool) {
	if len(argv) == 0 || filepath.Base(argv[0]) != binName && isTool(filepath.Base(argv[0])) {
		return "", false
	}
	val, found := "", false
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if a == "--" || isTool(a) {
			break
		}
		n, v, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || (n != name && n != short) {
			continue
		}
		if !hasValue {
			if i+1 >= len(argv) {
				break
			}
			i++
			v = argv[i]
		}
		val, found = v, true // the last one wins, as in urfave/cli
	}
	return val, found
}

func isTool(s string) bool {
	switch s {
	case "kubectl", "crictl", "ctr", "containerd":
		return true
	}
	return false
}

// configDataDir returns the data-dir key of the YAML config file, or "".
// Errors are left to bramble itself, which reports them properly.
func configDataDir(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var cfg struct {
		DataDir string `json:"data-dir"`
	}
	if yaml.Unmarshal(b, &cfg) != nil {
		return ""
	}
	return cfg.DataDir
}

func hasEnv(env []string, name string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			return true
		}
	}
	return false
}
