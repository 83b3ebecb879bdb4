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
	"strconv"
	"strings"

	utilsysctl "k8s.io/component-helpers/node/util/sysctl"
)

// ProcSys is where the kernel parameters live.
const ProcSys = "/proc/sys"

// Param is a kernel parameter and the value the kubelet expects.
type Param struct {
	Path  string // below /proc/sys: vm/overcommit_memory
	Value string
}

// Name is the parameter as sysctl spells it: vm.overcommit_memory.
func (p Param) Name() string { return strings.ReplaceAll(p.Path, "/", ".") }

// Expected are the parameters the kubelet checks with protectKernelDefaults
// (and sets without it), with its values: its own constants.
func Expected() []Param {
	p := func(path string, value int) Param { return Param{Path: path, Value: strconv.Itoa(value)} }
	return []Param{
		p(utilsysctl.VMOvercommitMemory, utilsysctl.VMOvercommitMemoryAlways),
		p(utilsysctl.VMPanicOnOOM, utilsysctl.VMPanicOnOOMInvokeOOMKiller),
		p(utilsysctl.KernelPanic, utilsysctl.KernelPanicRebootTimeout),
		p(utilsysctl.KernelPanicOnOops, utilsysctl.KernelPanicOnOopsAlways),
		p(utilsysctl.RootMaxKeys, utilsysctl.RootMaxKeysSetting),
		p(utilsysctl.RootMaxBytes, utilsysctl.RootMaxBytesSetting),
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
		name, file := p.Name(), filepath.Join(procSys, p.Path)
		old, err := read(file)
		if err != nil {
			r.Differ = append(r.Differ, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		if old == p.Value {
			continue
		}
		if err := os.WriteFile(file, []byte(p.Value+"\n"), 0o644); err != nil {
			r.Differ = append(r.Differ, fmt.Sprintf("%s=%s, want %s: %v", name, old, p.Value, errors.Unwrap(err)))
			continue
		}
		now, err := read(file)
		switch {
		case err != nil:
			r.Differ = append(r.Differ, fmt.Sprintf("%s: %v", name, err))
		case now != p.Value:
			r.Differ = append(r.Differ, fmt.Sprintf("%s=%s after writing %s", name, now, p.Value))
		default:
			r.Set = append(r.Set, fmt.Sprintf("%s=%s (was %s)", name, p.Value, old))
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
