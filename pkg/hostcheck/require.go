package hostcheck

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
)

// RequiredControllers returns the cgroup controllers kubelet cannot run
// without in the given mode.
//
// cgroup v1: kubelet's system validation fails unless cpu, cpuacct, cpuset
// and memory are mounted. cgroup v2: cpu, cpuset and memory (kubelet sets
// cpu and memory limits on every pod cgroup; the CPU manager needs cpuset).
// pids is optional (only pod PID limits need it; see Warnings).
func RequiredControllers(mode CgroupMode) []string {
	if mode == CgroupModeV2 {
		return []string{"cpu", "cpuset", "memory"}
	}
	return []string{"cpu", "cpuacct", "cpuset", "memory"}
}

// MissingControllersError is returned by RequireNode when a cgroup
// controller kubelet needs is missing. Its message names the controllers,
// the cause when it is known, and the exact fix.
type MissingControllersError struct {
	Cgroup   CgroupMode
	Required []string // what kubelet needs in this mode
	Missing  []string // what is not there, sorted
	Causes   []string // sentences; may be empty
	Fixes    []string // sentences; at least one
}

func (e *MissingControllersError) Error() string {
	noun := "controller"
	if len(e.Missing) > 1 {
		noun = "controllers"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "cgroup %s %s missing (kubelet needs %s on a cgroup %s host)",
		noun, strings.Join(e.Missing, ", "), strings.Join(e.Required, ", "), e.Cgroup)
	if len(e.Causes) > 0 {
		b.WriteString(": ")
		b.WriteString(strings.Join(e.Causes, "; "))
	}
	if len(e.Fixes) > 0 {
		b.WriteString(": to fix it, ")
		b.WriteString(strings.Join(e.Fixes, "; "))
	}
	return b.String()
}

// ErrNoCgroups is returned (wrapped) by RequireNode when no cgroup
// filesystem is mounted at /sys/fs/cgroup.
var ErrNoCgroups = errors.New("no cgroup filesystem is mounted at " + cgroupMountPoint)

// RequireNode fails when the host cannot run a node: when a cgroup
// controller kubelet needs (see RequiredControllers) is missing. The error
// (a *MissingControllersError) names the controller and the fix: on a
// Raspberry Pi, the words to add to the single line of its cmdline.txt
// (BootCmdline: /boot/firmware/cmdline.txt on bookworm, /boot/cmdline.txt on
// older releases) followed by a reboot; it also names cgroup_disable=memory
// in the running kernel's command line as the cause when it is there.
func (f Facts) RequireNode() error {
	if f.Cgroup == CgroupModeNone {
		return fmt.Errorf("%w: mount cgroup2 there (mount -t cgroup2 cgroup2 %s) or the cgroup v1 hierarchies", ErrNoCgroups, cgroupMountPoint)
	}
	required := RequiredControllers(f.Cgroup)
	var missing []string
	for _, c := range required {
		if !f.HasController(c) {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return nil
	}

	e := &MissingControllersError{Cgroup: f.Cgroup, Required: required, Missing: missing}
	pi := f.raspberryPi()

	// Controllers switched off in the kernel: fixed on the kernel command line.
	var offByKernel, notMounted, notInV2, notBuilt []string
	for _, c := range missing {
		switch f.whyMissing(c, pi) {
		case missingOffByKernel:
			offByKernel = append(offByKernel, c)
		case missingNotBuilt:
			notBuilt = append(notBuilt, c)
		case missingNotInV2:
			notInV2 = append(notInV2, c)
		default:
			notMounted = append(notMounted, c)
		}
	}

	for _, c := range offByKernel {
		e.Causes = append(e.Causes, f.offByKernelCause(c, pi))
	}
	if len(offByKernel) > 0 {
		e.Fixes = append(e.Fixes, f.cmdlineFixText(offByKernel, pi))
	}
	for _, c := range notMounted {
		e.Fixes = append(e.Fixes, notMountedFix(c))
	}
	for _, c := range notInV2 {
		e.Fixes = append(e.Fixes, f.notInV2Fix(c))
	}
	for _, c := range notBuilt {
		e.Fixes = append(e.Fixes, notBuiltFix(c))
	}
	return e
}

// Why a cgroup controller is missing.
type missingKind int

const (
	missingNotMounted  missingKind = iota // v1: the kernel has it but no hierarchy is mounted
	missingOffByKernel                    // switched off on the kernel command line
	missingNotBuilt                       // the kernel lacks it
	missingNotInV2                        // v2: bound elsewhere, not offered by the root
)

func (f Facts) whyMissing(c string, pi bool) missingKind {
	switch {
	case cmdlineDisables(f.Cmdline, c) || slices.Contains(f.KernelDisabled, c):
		return missingOffByKernel
	case len(f.KernelControllers) > 0 && !slices.Contains(f.KernelControllers, c):
		return missingNotBuilt
	case f.Cgroup == CgroupModeV2:
		return missingNotInV2
	case len(f.KernelControllers) == 0 && pi:
		// No /proc/cgroups to tell: on a Pi, the kernel command line is
		// the usual cause.
		return missingOffByKernel
	}
	return missingNotMounted
}

// ControllerFix returns why the cgroup controller c is missing (may be "")
// and the exact fix, as RequireNode words them, for one controller.
func (f Facts) ControllerFix(c string) (cause, fix string) {
	pi := f.raspberryPi()
	switch f.whyMissing(c, pi) {
	case missingOffByKernel:
		return f.offByKernelCause(c, pi), f.cmdlineFixText([]string{c}, pi)
	case missingNotBuilt:
		return "", notBuiltFix(c)
	case missingNotInV2:
		return "", f.notInV2Fix(c)
	}
	return "", notMountedFix(c)
}

func (f Facts) offByKernelCause(c string, pi bool) string {
	if cmdlineDisables(f.Cmdline, c) {
		cause := fmt.Sprintf("the running kernel's command line (/proc/cmdline) contains cgroup_disable=%s, which turns the %s controller off", c, c)
		if pi {
			cause += " (the Raspberry Pi firmware adds it; a cgroup_enable=" + c + " later on the line overrides it)"
		}
		return cause
	}
	return fmt.Sprintf("the kernel has the %s controller switched off (enabled 0 in /proc/cgroups)", c)
}

func notMountedFix(c string) string {
	mp := path.Join(cgroupMountPoint, c)
	return fmt.Sprintf("mount the %s hierarchy: mkdir -p %s && mount -t cgroup -o %s cgroup %s", c, mp, c, mp)
}

func (f Facts) notInV2Fix(c string) string {
	return fmt.Sprintf("the kernel has the %s controller but %s does not offer it: it is probably bound to a cgroup v1 hierarchy; unmount that (or boot with systemd.unified_cgroup_hierarchy=1) so cgroup v2 gets it",
		c, path.Join(f.CgroupV2Mount, "cgroup.controllers"))
}

func notBuiltFix(c string) string {
	return fmt.Sprintf("the kernel is built without the %s controller (%s): boot a kernel that has it", c, kernelConfigFor(c))
}

// raspberryPi reports whether the host looks like a Raspberry Pi.
func (f Facts) raspberryPi() bool {
	return f.BootCmdline != "" || strings.Contains(f.Model, "Raspberry Pi")
}

// cmdlineFixText says which words to add to the kernel command line.
func (f Facts) cmdlineFixText(controllers []string, pi bool) string {
	var words []string
	for _, c := range controllers {
		if c == "memory" {
			words = append(words, CmdlineMemoryFix)
		} else {
			words = append(words, "cgroup_enable="+c)
		}
	}
	add := "`" + strings.Join(words, " ") + "`"
	if pi {
		file := f.BootCmdline
		if file == "" {
			file = PiFirmwareCmdline + " (bookworm; " + PiLegacyCmdline + " on older releases)"
		}
		return "add " + add + " to the single line in " + file + " and reboot"
	}
	var disables []string
	for _, c := range controllers {
		if cmdlineDisables(f.Cmdline, c) {
			disables = append(disables, "cgroup_disable="+c)
		}
	}
	if len(disables) > 0 {
		return "remove `" + strings.Join(disables, " ") + "` from the kernel command line (with GRUB: GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot"
	}
	return "add " + add + " to the kernel command line (with GRUB: GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot"
}

func kernelConfigFor(controller string) string {
	switch controller {
	case "memory":
		return "CONFIG_MEMCG"
	case "cpu":
		return "CONFIG_CGROUP_SCHED"
	case "cpuacct":
		return "CONFIG_CGROUP_CPUACCT"
	case "cpuset":
		return "CONFIG_CPUSETS"
	case "pids":
		return "CONFIG_CGROUP_PIDS"
	}
	return "CONFIG_CGROUPS"
}
