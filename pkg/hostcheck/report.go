package hostcheck

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// Status is the outcome of one Check.
type Status int

const (
	// OK: the host provides it.
	OK Status = iota
	// Warn: a node runs, with a limitation the detail names.
	Warn
	// Missing: a node cannot run until it is fixed.
	Missing
)

// String is the tag printed in the report: "ok", "warn" or "MISSING".
func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	}
	return "MISSING"
}

// Check is one line of the host report.
type Check struct {
	Name   string
	Status Status
	Detail string
	// Fix is the exact command or edit that repairs it (Missing and
	// sometimes Warn); "" when there is nothing to do.
	Fix string
}

// String renders the check as a report line (without indentation):
// "[ok] name: detail", "[warn] name: detail[ -> fix: ...]" or
// "[MISSING] name: detail -> fix: ...".
func (c Check) String() string {
	return fmt.Sprintf("[%s] %s", c.Status, c.Text())
}

// Text is the check without its status: "name: detail[ -> fix: ...]".
func (c Check) Text() string {
	s := c.Name + ": " + c.Detail
	if c.Fix != "" {
		s += " -> fix: " + c.Fix
	}
	return s
}

// Report lists what the host provides for a node, one Check per feature:
// the cgroup version and each controller, overlayfs, bridge, br_netfilter,
// vxlan, iptables, nftables, swap, mount propagation of /,
// CAP_SYS_RESOURCE, AppArmor, the init system and the cgroup driver.
func (f Facts) Report() []Check {
	var checks []Check
	add := func(name string, st Status, detail, fix string) {
		checks = append(checks, Check{Name: name, Status: st, Detail: detail, Fix: fix})
	}

	if f.KernelRelease != "" || f.Model != "" {
		d := f.KernelRelease
		if f.Model != "" {
			d = strings.TrimSpace(d + " on " + f.Model)
		}
		add("kernel", OK, d, "")
	}

	// cgroups
	switch f.Cgroup {
	case CgroupModeV2:
		add("cgroup version", OK, "v2 (unified hierarchy at "+f.CgroupV2Mount+")", "")
	case CgroupModeV1, CgroupModeHybrid:
		d := "v1"
		if f.Cgroup == CgroupModeHybrid {
			d = "hybrid: v1 controllers, cgroup2 at " + f.CgroupV2Mount + " without them"
		}
		add("cgroup version", Warn, d+"; kubelet runs with failCgroupV1=false, Kubernetes deprecates v1",
			"boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2) when you can")
	default:
		add("cgroup version", Missing, "no cgroup filesystem at "+cgroupMountPoint,
			"mount -t cgroup2 cgroup2 "+cgroupMountPoint)
	}
	if f.Cgroup != CgroupModeNone {
		required := RequiredControllers(f.Cgroup)
		names := slices.Clone(required)
		for _, c := range []string{"pids", "devices", "freezer", "hugetlb", "io", "blkio"} {
			if !slices.Contains(names, c) && (f.HasController(c) || c == "pids") {
				names = append(names, c)
			}
		}
		for _, c := range names {
			name := "cgroup controller " + c
			switch {
			case f.HasController(c):
				add(name, OK, "enabled", "")
			case slices.Contains(required, c):
				cause, fix := f.ControllerFix(c)
				if cause == "" {
					cause = "missing; kubelet needs it"
				}
				if f.whyMissing(c, f.raspberryPi()) == missingOffByKernel && f.BootCmdline != "" {
					fix += ", or run `bramble check-config --fix-cgroups`"
				}
				add(name, Missing, cause, fix)
			default:
				add(name, Warn, "missing: pod PID limits are not enforced", "")
			}
		}
	}

	// filesystems and kernel networking
	switch {
	case f.OverlayFS:
		add("overlayfs", OK, "in /proc/filesystems (containerd snapshotter overlayfs)", "")
	case f.OverlayModule:
		add("overlayfs", OK, "module available, loaded on first mount", "")
	default:
		add("overlayfs", Warn, "not available: containerd falls back to the slower native snapshotter", "modprobe overlay (kernel CONFIG_OVERLAY_FS)")
	}
	f.driverCheck(add, "bridge", "kernel bridge driver (cni0)", "the pod network bridge cni0 cannot be made", "CONFIG_BRIDGE")
	switch {
	case f.BridgeNetfilter && f.BridgeNFCallIptables:
		add("br_netfilter", OK, "net.bridge.bridge-nf-call-iptables=1", "")
	case f.BridgeNetfilter:
		add("br_netfilter", Warn, "net.bridge.bridge-nf-call-iptables=0: Service traffic between pods on one bridge bypasses iptables",
			"sysctl -w net.bridge.bridge-nf-call-iptables=1")
	case f.BrNetfilterModule:
		add("br_netfilter", Warn, "module not loaded: Service traffic between pods on one node bypasses iptables",
			"modprobe br_netfilter && echo br_netfilter > /etc/modules-load.d/bramble.conf")
	default:
		add("br_netfilter", Warn, "not available: Service traffic between pods on one node bypasses iptables",
			"modprobe br_netfilter (kernel CONFIG_BRIDGE_NETFILTER)")
	}
	f.driverCheck(add, "vxlan", "kernel vxlan driver (flannel backend, udp 8472)", "flannel cannot create flannel.1", "CONFIG_VXLAN")
	ipt := f.Iptables
	switch {
	case ipt.Iptables != "":
		d := ipt.Iptables
		if ipt.Mode != "" {
			d += " (" + ipt.Mode + " backend)"
		}
		add("iptables", OK, d, "")
	case ipt.IptablesNft != "" || ipt.IptablesLegacy != "":
		add("iptables", Missing, "no plain iptables command (kube-proxy runs `iptables`), only "+strings.TrimSpace(ipt.IptablesNft+" "+ipt.IptablesLegacy),
			"update-alternatives --set iptables /usr/sbin/iptables-nft")
	default:
		add("iptables", Missing, "no iptables command: kube-proxy (iptables mode) needs it", "apt-get install iptables")
	}
	if ipt.Ipset != "" {
		add("ipset", OK, ipt.Ipset, "")
	} else {
		add("ipset", Missing, "no ipset command: NetworkPolicies are enforced with ipsets; a node refuses to start without it unless the server runs with --disable-network-policy",
			"apt-get install ipset")
	}
	if ipt.Nft != "" {
		add("nftables", OK, ipt.Nft, "")
	} else {
		add("nftables", OK, "no nft command (kube-proxy's iptables mode does not need it)", "")
	}
	if f.Swap {
		add("swap", Warn, "on: kubelet runs with failSwapOn=false, memory limits are less predictable", "swapoff -a (and disable it at boot, e.g. dphys-swapfile on Raspberry Pi OS)")
	} else {
		add("swap", OK, "off", "")
	}

	// process and host
	if f.RootShared {
		add("mount propagation", OK, "/ is shared", "")
	} else {
		add("mount propagation", OK, "/ is private: bramble runs kubelet and containerd in a mount namespace of their own with / rshared", "")
	}
	if f.CapSysResource {
		add("CAP_SYS_RESOURCE", OK, "present", "")
	} else {
		add("CAP_SYS_RESOURCE", Warn, "missing (container or non-root): containerd restricts oom_score_adj and kubelet keeps it non-negative", "")
	}
	if ok, why := f.AppArmor(); ok {
		add("AppArmor", OK, "enabled: containers get the runtime/default profile", "")
	} else {
		add("AppArmor", OK, "off for containers: "+why, "")
	}
	if f.Systemd {
		add("init system", OK, "systemd (cgroup driver "+f.CgroupDriver()+")", "")
	} else {
		add("init system", OK, "no systemd (cgroup driver "+f.CgroupDriver()+")", "")
	}
	return checks
}

// driverCheck adds the check of a kernel network driver a node needs:
// missing when the module lists say the kernel has no such driver, a
// warning when they cannot be read and it is not loaded yet (the kernel
// loads it on first use when it is a module).
func (f Facts) driverCheck(add func(name string, st Status, detail, fix string), name, have, without, config string) {
	has := f.Vxlan
	if name == "bridge" {
		has = f.Bridge
	}
	fix := "modprobe " + name + " (kernel " + config + ")"
	switch {
	case has:
		add(name, OK, have, "")
	case f.ModuleLists:
		add(name, Missing, "no "+name+" driver in kernel "+f.KernelRelease+": "+without, fix)
	default:
		add(name, Warn, "not loaded, and no module list for kernel "+f.KernelRelease+" to tell whether it exists: without it "+without, fix)
	}
}

// WriteReport prints the checks under a "bramble check-config" title, one
// indented line each, then a summary line, and returns how many are
// Missing.
func WriteReport(w io.Writer, checks []Check) (missing int, err error) {
	var b strings.Builder
	b.WriteString("bramble check-config\n")
	warned := 0
	for _, c := range checks {
		b.WriteString("  " + c.String() + "\n")
		switch c.Status {
		case Missing:
			missing++
		case Warn:
			warned++
		}
	}
	if missing > 0 {
		fmt.Fprintf(&b, "%d required %s missing, %d %s: bramble cannot run a node here until %s fixed\n",
			missing, plural(missing, "feature", "features"), warned, plural(warned, "warning", "warnings"), plural(missing, "it is", "they are"))
	} else {
		fmt.Fprintf(&b, "everything required is there (%d %s)\n", warned, plural(warned, "warning", "warnings"))
	}
	_, err = io.WriteString(w, b.String())
	return missing, err
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// MemoryOffByCmdline reports whether the memory cgroup controller is
// missing because the kernel command line switches it off: what
// FixBootCmdline repairs on a Raspberry Pi (a reboot later).
func (f Facts) MemoryOffByCmdline() bool {
	return f.Cgroup != CgroupModeNone && !f.HasController("memory") &&
		f.whyMissing("memory", f.raspberryPi()) == missingOffByKernel
}
