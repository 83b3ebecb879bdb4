// Package kernelparams sets the kernel parameters the kubelet expects
// (what it calls the kernel defaults) and says whether they all hold, so the
// kubelet can run with protectKernelDefaults: it then refuses to start on a
// host whose parameters differ instead of changing them behind the
// administrator's back.
package kernelparams

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ProcSys is where the kernel parameters live.
const ProcSys = "/proc/sys"

// Param is a kernel parameter and the value the kubelet expects.
type Param struct {
	Name  string // dotted, as sysctl spells it: vm.overcommit_memory
	Value string
}

// Expected are the parameters the kubelet checks with protectKernelDefaults
// (and sets without it), with its values.
func Expected() []Param {
	return []Param{
		{"vm.overcommit_memory", "1"},
		{"vm.panic_on_oom", "0"},
		{"kernel.panic", "10"},
		{"kernel.panic_on_oops", "1"},
		{"kernel.keys.root_maxkeys", "1000000"},
		{"kernel.keys.root_maxbytes", "25000000"},
	}
}

// Result is what Ensure did and found.
type Result struct {
	// Set are the parameters changed, "name=value (was old)".
	Set []string
	// Differ are the parameters that do not hold afterwards, with why.
	Differ []string
}

// Hold reports whether every expected parameter has its value: the
// kubelet may then run with protectKernelDefaults.
func (r Result) Hold() bool { return len(r.Differ) == 0 }

// Ensure gives every expected parameter under procSys (ProcSys on a host)
// its value where it differs, then reads them all back.
func Ensure(procSys string) Result {
	var r Result
	for _, p := range Expected() {
		file := filepath.Join(procSys, strings.ReplaceAll(p.Name, ".", "/"))
		old, err := read(file)
		if err != nil {
			r.Differ = append(r.Differ, fmt.Sprintf("%s: %v", p.Name, err))
			continue
		}
		if old == p.Value {
			continue
		}
		if err := os.WriteFile(file, []byte(p.Value+"\n"), 0o644); err != nil {
			r.Differ = append(r.Differ, fmt.Sprintf("%s=%s, want %s: %v", p.Name, old, p.Value, errors.Unwrap(err)))
			continue
		}
		now, err := read(file)
		switch {
		case err != nil:
			r.Differ = append(r.Differ, fmt.Sprintf("%s: %v", p.Name, err))
		case now != p.Value:
			r.Differ = append(r.Differ, fmt.Sprintf("%s=%s after writing %s", p.Name, now, p.Value))
		default:
			r.Set = append(r.Set, fmt.Sprintf("%s=%s (was %s)", p.Name, p.Value, old))
		}
	}
	return r
}

func read(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", errors.New("not in this kernel")
		}
		return "", fmt.Errorf("read: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
