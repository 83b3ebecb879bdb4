package containerd

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/bramble-pi/bramble/pkg/extraargs"
)

// containerd's command line has five flags. Four of them place containerd
// where the kubelet, the CRI plugin's pods and bramble's tools expect it, so
// they stay bramble's; what is left for --containerd-arg is the log level
// (everything else is in config.toml: use config.toml.tmpl).
var (
	managedFlags = map[string]string{
		"config":  "bramble generates config.toml; put your own as config.toml.tmpl next to it",
		"address": "the kubelet, ctr and crictl use bramble's socket",
		"root":    "bramble's images and snapshots live in <data-dir>/agent/containerd",
		"state":   "bramble's socket and shim state live in /run/bramble/containerd",
	}
	logLevels = []string{"trace", "debug", "info", "warn", "warning", "error", "fatal", "panic"}
)

// extra are the user's --containerd-arg values.
func (c Config) extra() extraargs.Args {
	return extraargs.Args{Flag: "containerd-arg", Component: "containerd", Values: c.Args}
}

// CheckArgs refuses --containerd-arg values containerd would refuse (it is
// a child process: its own error would come late, in its log file) and the
// flags bramble sets itself.
func CheckArgs(args []string) error {
	fs := pflag.NewFlagSet("containerd", pflag.ContinueOnError)
	for _, name := range []string{"config", "log-level", "address", "root", "state"} {
		fs.String(name, "", "")
	}
	extra := Config{Args: args}.extra()
	if err := extra.Check(fs, managedFlags); err != nil {
		return err
	}
	for _, arg := range extra.Normalized() {
		if level, ok := strings.CutPrefix(arg, "--log-level="); ok && !slices.Contains(logLevels, level) {
			return fmt.Errorf("--containerd-arg %q: the log level is one of %s", strings.TrimPrefix(arg, "--"), strings.Join(logLevels, ", "))
		}
	}
	return nil
}

// commandLine is containerd's command line after its executable.
func (c Config) commandLine() []string {
	return c.extra().Merge([]string{"--config=" + c.ConfigFile()})
}
