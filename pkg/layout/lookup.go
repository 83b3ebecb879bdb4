package layout

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// Lookup finds a setting the way bramble's commands do (flag > BRAMBLE_*
// environment variable > config file > default) for code that runs before,
// or without, the command-line parser: the release launcher and the
// multi-call tools (kubectl, crictl, ctr).
type Lookup struct {
	Args []string // the process's argv (argv[0] included)
	Env  []string // KEY=VALUE
}

// Current is the Lookup of this process.
func Current() Lookup { return Lookup{Args: os.Args, Env: os.Environ()} }

// DataDir is --data-dir/-d, BRAMBLE_DATA_DIR, the config file's data-dir,
// or /var/lib/bramble.
func (l Lookup) DataDir() string {
	return l.setting("data-dir", "d", []string{"BRAMBLE_DATA_DIR"}, DefaultDataDir)
}

// Kubeconfig is the admin kubeconfig the server writes: --write-kubeconfig/-o,
// BRAMBLE_WRITE_KUBECONFIG (or BRAMBLE_KUBECONFIG_OUTPUT), the config
// file's write-kubeconfig, or /etc/bramble/bramble.yaml.
func (l Lookup) Kubeconfig() string {
	return l.setting("write-kubeconfig", "o", []string{"BRAMBLE_WRITE_KUBECONFIG", "BRAMBLE_KUBECONFIG_OUTPUT"}, DefaultKubeconfig)
}

// ConfigFile is --config/-c, BRAMBLE_CONFIG_FILE or /etc/bramble/config.yaml.
func (l Lookup) ConfigFile() string {
	if v, ok := flagValue(l.Args, "config", "c"); ok {
		return v
	}
	if v := l.getenv("BRAMBLE_CONFIG_FILE"); v != "" {
		return v
	}
	return DefaultConfigFile
}

// Getenv is the last value of an environment variable, or "".
func (l Lookup) Getenv(key string) string { return l.getenv(key) }

func (l Lookup) setting(name, short string, envs []string, def string) string {
	if v, ok := flagValue(l.Args, name, short); ok {
		return v
	}
	for _, e := range envs {
		if v := l.getenv(e); v != "" {
			return v
		}
	}
	// Errors in the file are left to bramble itself, which reports them.
	if values, err := ReadConfigFile(l.ConfigFile()); err == nil {
		if v, ok := values[name].(string); ok && v != "" {
			return v
		}
	}
	return def
}

func (l Lookup) getenv(key string) string {
	for i := len(l.Env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(l.Env[i], key+"="); ok {
			return v
		}
	}
	return ""
}

// ReadConfigFile reads bramble's YAML config file (keys are flag names).
// A missing file is an error satisfying errors.Is(err, os.ErrNotExist).
func ReadConfigFile(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(data, &values); err != nil {
		return nil, fmt.Errorf("config file %s: not valid YAML: %w", path, err)
	}
	if values == nil {
		values = map[string]any{}
	}
	return values, nil
}

// IsNotExist says whether a ReadConfigFile error is a missing file.
func IsNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }

// flagValue finds --name/-name/-short VALUE or --name=VALUE in bramble's own
// arguments: not in a multi-call invocation (kubectl, crictl, ctr), not
// after "--" or a tool subcommand, whose arguments are that tool's.
func flagValue(argv []string, name, short string) (string, bool) {
	if len(argv) == 0 || filepath.Base(argv[0]) != "bramble" && isTool(filepath.Base(argv[0])) {
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
	case "kubectl", "crictl", "ctr":
		return true
	}
	return false
}
