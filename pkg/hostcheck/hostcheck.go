// Package hostcheck detects the facts about the host a bramble node depends
// on: the cgroup layout and its controllers, whether systemd runs the host,
// the process's capabilities, mount propagation of /, overlayfs, bridge
// netfilter, the iptables flavour, swap and the kernel command line.
//
// Nothing is hard-coded: a Raspberry Pi on Raspberry Pi OS (cgroup v2,
// systemd, a shared /) and a CI VM (cgroup v1, no systemd, a private /, no
// CAP_SYS_RESOURCE) get different answers and the node configures kubelet and
// containerd from them (CgroupDriver, RestrictOOMScoreAdj, ...).
//
// Detect reads the real host. DetectFrom reads the same files from any
// fs.FS rooted at "/" (paths without the leading slash, "proc/self/status"),
// so tests can feed sample files, e.g. a testing/fstest.MapFS.
package hostcheck

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/bramble-pi/bramble/pkg/mountinfo"
)

// Source is where DetectFrom reads the host's files: an fs.FS whose root is
// the host's "/". os.DirFS("/") is the real host. Symbolic links are followed
// inside the Source (absolute targets are taken relative to its root) when it
// implements fs.ReadLinkFS, as os.DirFS and fstest.MapFS do.
type Source = fs.FS

// CgroupMode is the cgroup layout of the host.
type CgroupMode int

const (
	// CgroupModeNone: no cgroup filesystem is mounted at /sys/fs/cgroup.
	CgroupModeNone CgroupMode = iota
	// CgroupModeV1: only cgroup v1 hierarchies.
	CgroupModeV1
	// CgroupModeHybrid: cgroup v1 controller hierarchies plus a cgroup2
	// mount (usually /sys/fs/cgroup/unified) with few or no controllers.
	// Kubernetes treats it as v1.
	CgroupModeHybrid
	// CgroupModeV2: the unified cgroup2 hierarchy mounted at /sys/fs/cgroup.
	CgroupModeV2
)

// String returns "none", "v1", "hybrid" or "v2".
func (m CgroupMode) String() string {
	switch m {
	case CgroupModeV1:
		return "v1"
	case CgroupModeHybrid:
		return "hybrid"
	case CgroupModeV2:
		return "v2"
	default:
		return "none"
	}
}

// MarshalText makes the mode readable in JSON and YAML output.
func (m CgroupMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// Well-known paths, relative to the Source root.
const (
	cgroupMountPoint = "/sys/fs/cgroup"

	// PiFirmwareCmdline is the Raspberry Pi kernel command line file on
	// Raspberry Pi OS bookworm and later.
	PiFirmwareCmdline = "/boot/firmware/cmdline.txt"
	// PiLegacyCmdline is the kernel command line file on older Raspberry
	// Pi OS releases (bullseye and before).
	PiLegacyCmdline = "/boot/cmdline.txt"
)

// capSysResource is the bit of CAP_SYS_RESOURCE in the capability sets.
const capSysResource = 24

// Iptables tells which iptables tools the host has. Each path is absolute
// (as seen from the Source root) or "" when the tool is absent.
type Iptables struct {
	Iptables       string `json:"iptables,omitempty"`
	IptablesLegacy string `json:"iptablesLegacy,omitempty"`
	IptablesNft    string `json:"iptablesNft,omitempty"`
	IP6tables      string `json:"ip6tables,omitempty"`
	Nft            string `json:"nft,omitempty"`
	// Ipset is the ipset command the network-policy controller runs.
	Ipset string `json:"ipset,omitempty"`
	// Mode is the backend the plain `iptables` command uses: "nft" or
	// "legacy", read from where its symlinks lead (Debian alternatives);
	// "" when there is no iptables or it cannot be told.
	Mode string `json:"mode,omitempty"`
}

// Facts are the host properties a node depends on.
type Facts struct {
	// Cgroup is the cgroup layout.
	Cgroup CgroupMode `json:"cgroup"`
	// Controllers are the cgroup controllers a node can use, sorted: for v2
	// those listed in the root cgroup.controllers; for v1 and hybrid those
	// enabled in /proc/cgroups and mounted as a v1 hierarchy.
	Controllers []string `json:"controllers"`
	// KernelDisabled are controllers the kernel knows but has switched off
	// (enabled column 0 in /proc/cgroups, e.g. by cgroup_disable=memory).
	KernelDisabled []string `json:"kernelDisabled,omitempty"`
	// KernelControllers are all controllers listed in /proc/cgroups.
	KernelControllers []string `json:"kernelControllers,omitempty"`
	// CgroupV1Mounts maps each v1 controller (and "name=systemd") to the
	// mount point of its hierarchy; empty on a v2 host.
	CgroupV1Mounts map[string]string `json:"cgroupV1Mounts,omitempty"`
	// CgroupV2Mount is the mount point of the cgroup2 filesystem
	// ("/sys/fs/cgroup" on v2, "/sys/fs/cgroup/unified" on hybrid), or "".
	CgroupV2Mount string `json:"cgroupV2Mount,omitempty"`

	// Systemd is true when systemd runs the host (/run/systemd/system exists).
	Systemd bool `json:"systemd"`
	// CapSysResource is true when this process has CAP_SYS_RESOURCE in its
	// effective set (needed for negative oom_score_adj).
	CapSysResource bool `json:"capSysResource"`
	// RootShared is true when / is a shared mount (mount propagation for
	// kubelet volumes works without a mount namespace of our own).
	RootShared bool `json:"rootShared"`

	// OverlayFS is true when the kernel lists overlay in /proc/filesystems.
	OverlayFS bool `json:"overlayfs"`
	// OverlayModule is true when overlay is not loaded yet but its module
	// file exists for the running kernel (mounting will load it).
	OverlayModule bool `json:"overlayModule,omitempty"`
	// BridgeNetfilter is true when net.bridge.bridge-nf-call-iptables exists
	// (br_netfilter is loaded or built in).
	BridgeNetfilter bool `json:"bridgeNetfilter"`
	// BridgeNFCallIptables is the value of that sysctl (true when "1").
	BridgeNFCallIptables bool `json:"bridgeNFCallIptables"`
	// Bridge is true when the kernel has the bridge driver (cni0): loaded,
	// built in, or a module file for the running kernel exists.
	Bridge bool `json:"bridge"`
	// BrNetfilterModule is true when br_netfilter is not loaded but its
	// module file exists (modprobe br_netfilter loads it).
	BrNetfilterModule bool `json:"brNetfilterModule,omitempty"`
	// Vxlan is true when the kernel has the vxlan driver (flannel's
	// backend): loaded, built in, or a module file exists.
	Vxlan bool `json:"vxlan"`
	// ModuleLists is true when the running kernel's modules.dep or
	// modules.builtin could be read: a driver that is neither loaded nor
	// listed there is really absent. Without them only loaded drivers are
	// seen.
	ModuleLists bool `json:"moduleLists"`
	// Iptables are the iptables tools found.
	Iptables Iptables `json:"iptables"`
	// Swap is true when /proc/swaps lists an active swap area.
	Swap bool `json:"swap"`
	// AppArmorKernel is true when the kernel runs AppArmor
	// (/sys/module/apparmor/parameters/enabled is Y and
	// /sys/kernel/security/apparmor exists).
	AppArmorKernel bool `json:"apparmorKernel"`
	// AppArmorParser is true when /sbin/apparmor_parser exists: containerd
	// loads its runtime/default profile with it.
	AppArmorParser bool `json:"apparmorParser"`

	// Cmdline is the running kernel's command line (/proc/cmdline).
	Cmdline string `json:"cmdline"`
	// KernelRelease is /proc/sys/kernel/osrelease.
	KernelRelease string `json:"kernelRelease,omitempty"`
	// Model is the device-tree model ("Raspberry Pi 4 Model B Rev 1.4"), or "".
	Model string `json:"model,omitempty"`
	// BootCmdline is the Raspberry Pi cmdline.txt to edit:
	// /boot/firmware/cmdline.txt when it exists, else /boot/cmdline.txt
	// when that exists, else "".
	BootCmdline string `json:"bootCmdline,omitempty"`
}

// Detect reads the facts of the host this process runs on.
func Detect() (Facts, error) {
	return DetectFrom(os.DirFS("/"))
}

// DetectFrom reads the facts from src, an fs.FS rooted at the host's "/".
// Only the mount table and the process status are required; other files
// that are missing leave their facts at the zero value.
func DetectFrom(src Source) (Facts, error) {
	var f Facts

	raw, err := fs.ReadFile(src, "proc/self/mountinfo")
	if err != nil {
		return f, fmt.Errorf("read mount table: %w", err)
	}
	mounts, err := mountinfo.Parse(raw)
	if err != nil {
		return f, fmt.Errorf("parse /proc/self/mountinfo: %w", err)
	}
	if root := mountinfo.Find(mounts, "/"); root != nil {
		f.RootShared = root.Shared()
	}

	if err := f.detectCgroups(src, mounts); err != nil {
		return f, err
	}

	status, err := fs.ReadFile(src, "proc/self/status")
	if err != nil {
		return f, fmt.Errorf("read process status: %w", err)
	}
	capEff, err := parseCapEff(status)
	if err != nil {
		return f, fmt.Errorf("parse /proc/self/status: %w", err)
	}
	f.CapSysResource = capEff&(1<<capSysResource) != 0

	f.Systemd = isDir(src, "run/systemd/system")
	f.KernelRelease = readTrimmed(src, "proc/sys/kernel/osrelease")
	f.Cmdline = readTrimmed(src, "proc/cmdline")
	f.Model = strings.TrimRight(readTrimmed(src, "proc/device-tree/model"), "\x00")
	if f.Model == "" {
		f.Model = strings.TrimRight(readTrimmed(src, "sys/firmware/devicetree/base/model"), "\x00")
	}
	f.BootCmdline = findBootCmdline(src)

	if b, err := fs.ReadFile(src, "proc/filesystems"); err == nil {
		f.OverlayFS = hasFilesystem(b, "overlay")
	}
	if !f.OverlayFS && f.KernelRelease != "" {
		f.OverlayModule = overlayModuleExists(src, f.KernelRelease)
	}

	if v, err := fs.ReadFile(src, "proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		f.BridgeNetfilter = true
		f.BridgeNFCallIptables = strings.TrimSpace(string(v)) == "1"
	}

	f.Bridge = f.BridgeNetfilter || kernelModule(src, f.KernelRelease, "bridge")
	if !f.BridgeNetfilter {
		f.BrNetfilterModule = kernelModule(src, f.KernelRelease, "br_netfilter")
	}
	f.Vxlan = kernelModule(src, f.KernelRelease, "vxlan")
	if f.KernelRelease != "" {
		for _, list := range []string{"modules.dep", "modules.builtin"} {
			if _, err := fs.Stat(src, path.Join("lib/modules", f.KernelRelease, list)); err == nil {
				f.ModuleLists = true
			}
		}
	}

	if b, err := fs.ReadFile(src, "proc/swaps"); err == nil {
		f.Swap = swapOn(b)
	}

	f.Iptables = detectIptables(src)
	f.AppArmorKernel = readTrimmed(src, "sys/module/apparmor/parameters/enabled") == "Y" && isDir(src, "sys/kernel/security/apparmor")
	f.AppArmorParser = isFile(src, "sbin/apparmor_parser")
	return f, nil
}

// HasController reports whether the cgroup controller name is usable.
func (f Facts) HasController(name string) bool {
	return slices.Contains(f.Controllers, name)
}

// CgroupV1 reports whether kubelet must run in cgroup v1 mode (v1 or hybrid).
func (f Facts) CgroupV1() bool {
	return f.Cgroup != CgroupModeV2
}

// CgroupDriver is the cgroup driver for kubelet and containerd: "systemd"
// only when systemd runs the host and cgroups are v2, else "cgroupfs".
func (f Facts) CgroupDriver() string {
	if f.Systemd && f.Cgroup == CgroupModeV2 {
		return "systemd"
	}
	return "cgroupfs"
}

// RestrictOOMScoreAdj reports whether containerd must clamp oom_score_adj
// (restrict_oom_score_adj) and kubelet must keep oomScoreAdj non-negative:
// true when the process lacks CAP_SYS_RESOURCE.
func (f Facts) RestrictOOMScoreAdj() bool {
	return !f.CapSysResource
}

// NeedsOwnMountNamespace reports whether kubelet and containerd must run in
// a mount namespace of their own with / made rshared: true when / is not
// a shared mount.
func (f Facts) NeedsOwnMountNamespace() bool {
	return !f.RootShared
}

// Snapshotter is the containerd snapshotter to use: "overlayfs" when the
// kernel has (or can load) overlay, else "native".
func (f Facts) Snapshotter() string {
	if f.OverlayFS || f.OverlayModule {
		return "overlayfs"
	}
	return "native"
}

// AppArmor reports whether containers get AppArmor profiles (containerd's
// disable_apparmor off) and, when not, why: the kernel must run AppArmor
// and containerd needs /sbin/apparmor_parser to load its runtime/default
// profile (it checks both itself and would refuse such pods otherwise).
func (f Facts) AppArmor() (enabled bool, why string) {
	switch {
	case !f.AppArmorKernel:
		return false, "the kernel does not run AppArmor (/sys/module/apparmor/parameters/enabled is not Y or /sys/kernel/security/apparmor is missing)"
	case !f.AppArmorParser:
		return false, "the kernel runs AppArmor but /sbin/apparmor_parser is missing (apt-get install apparmor)"
	}
	return true, ""
}

// Warnings are the checks of Report that are not OK, in the report's words
// (Check.Text): what a node that passed RequireNode logs at start.
func (f Facts) Warnings() []string {
	var w []string
	for _, c := range f.Report() {
		if c.Status != OK {
			w = append(w, c.Text())
		}
	}
	return w
}

// ---- cgroups

func (f *Facts) detectCgroups(src Source, mounts []mountinfo.Mount) error {
	kernel, err := readProcCgroups(src)
	if err != nil {
		return err
	}
	for _, c := range kernel {
		f.KernelControllers = append(f.KernelControllers, c.name)
		if !c.enabled {
			f.KernelDisabled = append(f.KernelDisabled, c.name)
		}
	}
	slices.Sort(f.KernelControllers)
	slices.Sort(f.KernelDisabled)

	v1 := map[string]string{}
	var v2Mounts []string
	for _, m := range mounts {
		if m.MountPoint != cgroupMountPoint && !strings.HasPrefix(m.MountPoint, cgroupMountPoint+"/") {
			continue
		}
		switch m.FSType {
		case "cgroup2":
			v2Mounts = append(v2Mounts, m.MountPoint)
		case "cgroup":
			for _, opt := range strings.Split(m.SuperOptions, ",") {
				if v1NotController(opt) || (strings.Contains(opt, "=") && !strings.HasPrefix(opt, "name=")) {
					continue
				}
				if strings.HasPrefix(opt, "name=") || kernel.has(opt) || len(kernel) == 0 {
					v1[opt] = m.MountPoint
				}
			}
		}
	}

	switch {
	case slices.Contains(v2Mounts, cgroupMountPoint):
		f.Cgroup = CgroupModeV2
		f.CgroupV2Mount = cgroupMountPoint
	case len(v1) > 0 && len(v2Mounts) > 0:
		f.Cgroup = CgroupModeHybrid
		f.CgroupV2Mount = v2Mounts[0]
	case len(v1) > 0:
		f.Cgroup = CgroupModeV1
	default:
		f.Cgroup = CgroupModeNone
	}

	switch f.Cgroup {
	case CgroupModeV2:
		b, err := fs.ReadFile(src, strings.TrimPrefix(path.Join(f.CgroupV2Mount, "cgroup.controllers"), "/"))
		if err != nil {
			return fmt.Errorf("read cgroup v2 controllers: %w", err)
		}
		f.Controllers = strings.Fields(string(b))
	case CgroupModeV1, CgroupModeHybrid:
		f.CgroupV1Mounts = v1
		for name := range v1 {
			if strings.HasPrefix(name, "name=") {
				continue
			}
			if c, ok := kernel.get(name); ok && !c.enabled {
				continue
			}
			f.Controllers = append(f.Controllers, name)
		}
	}
	slices.Sort(f.Controllers)
	return nil
}

// v1NotController reports whether a cgroup v1 mount option names no controller.
func v1NotController(opt string) bool {
	switch opt {
	case "rw", "ro", "none", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "favordynmods":
		return true
	}
	return false
}

type kernelController struct {
	name      string
	hierarchy int
	enabled   bool
}

type kernelControllers []kernelController

func (k kernelControllers) get(name string) (kernelController, bool) {
	for _, c := range k {
		if c.name == name {
			return c, true
		}
	}
	return kernelController{}, false
}

func (k kernelControllers) has(name string) bool {
	_, ok := k.get(name)
	return ok
}

// readProcCgroups parses /proc/cgroups; a missing file yields no entries.
func readProcCgroups(src Source) (kernelControllers, error) {
	b, err := fs.ReadFile(src, "proc/cgroups")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read /proc/cgroups: %w", err)
	}
	var out kernelControllers
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 4 {
			return nil, fmt.Errorf("parse /proc/cgroups: short line %q", line)
		}
		h, err := strconv.Atoi(fields[1])
		if err != nil {
			return nil, fmt.Errorf("parse /proc/cgroups: hierarchy in %q: %w", line, err)
		}
		out = append(out, kernelController{name: fields[0], hierarchy: h, enabled: fields[3] == "1"})
	}
	return out, sc.Err()
}

// ---- capabilities, files

// parseCapEff returns the CapEff mask from /proc/<pid>/status.
func parseCapEff(status []byte) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "CapEff:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return 0, fmt.Errorf("CapEff %q: %w", strings.TrimSpace(v), err)
		}
		return mask, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no CapEff line")
}

func readTrimmed(src Source, name string) string {
	b, err := fs.ReadFile(src, name)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func isDir(src Source, name string) bool {
	fi, err := fs.Stat(src, name)
	return err == nil && fi.IsDir()
}

// resolve follows symbolic links of name inside src (absolute targets are
// relative to the root) and returns the final path, or an error when name
// or a link target does not exist.
func resolve(src Source, name string) (string, error) {
	for range 40 {
		fi, err := fs.Lstat(src, name)
		if err != nil {
			// The Source cannot report links: fall back to Stat.
			if errors.Is(err, errors.ErrUnsupported) {
				_, err = fs.Stat(src, name)
				return name, err
			}
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			return name, nil
		}
		target, err := fs.ReadLink(src, name)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			name = strings.TrimPrefix(path.Clean(target), "/")
		} else {
			name = path.Join(path.Dir(name), target)
		}
		if name == "" || name == "." || strings.HasPrefix(name, "..") {
			return "", fmt.Errorf("symlink %s leaves the root: %w", target, fs.ErrNotExist)
		}
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links: %w", name, fs.ErrInvalid)
}

// isFile reports whether name (following links) is a regular file.
func isFile(src Source, name string) bool {
	final, err := resolve(src, name)
	if err != nil {
		return false
	}
	fi, err := fs.Stat(src, final)
	return err == nil && fi.Mode().IsRegular()
}

func findBootCmdline(src Source) string {
	for _, p := range []string{PiFirmwareCmdline, PiLegacyCmdline} {
		if isFile(src, strings.TrimPrefix(p, "/")) {
			return p
		}
	}
	return ""
}

func hasFilesystem(procFilesystems []byte, name string) bool {
	sc := bufio.NewScanner(bytes.NewReader(procFilesystems))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 0 && fields[len(fields)-1] == name {
			return true
		}
	}
	return false
}

// overlayModuleExists looks for the overlay module of the running kernel
// without loading it (no modprobe).
func overlayModuleExists(src Source, release string) bool {
	if kernelModule(src, release, "overlay") {
		return true
	}
	dir := path.Join("lib/modules", release, "kernel/fs/overlayfs")
	entries, err := fs.ReadDir(src, dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "overlay.ko") {
			return true
		}
	}
	return false
}

// kernelModule reports whether the kernel has module name without loading
// it: /sys/module/<name> exists (loaded, or built in with parameters), or the
// running kernel's modules.builtin or modules.dep lists <name>.ko.
func kernelModule(src Source, release, name string) bool {
	if isDir(src, path.Join("sys/module", name)) {
		return true
	}
	if release == "" {
		return false
	}
	for _, list := range []string{"modules.builtin", "modules.dep"} {
		b, err := fs.ReadFile(src, path.Join("lib/modules", release, list))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			file, _, _ := strings.Cut(sc.Text(), ":")
			base := path.Base(file)
			if base == name+".ko" || strings.HasPrefix(base, name+".ko.") {
				return true
			}
		}
	}
	return false
}

// swapOn reports whether /proc/swaps lists any swap area after its header.
func swapOn(procSwaps []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(procSwaps))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "Filename") {
			continue
		}
		return true
	}
	return false
}

// ---- iptables

// lookBin returns the absolute path of the first regular file named name in
// the usual binary directories, or "".
func lookBin(src Source, name string) string {
	for _, d := range []string{"usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin"} {
		p := path.Join(d, name)
		if isFile(src, p) {
			return "/" + p
		}
	}
	return ""
}

func detectIptables(src Source) Iptables {
	ipt := Iptables{
		Iptables:       lookBin(src, "iptables"),
		IptablesLegacy: lookBin(src, "iptables-legacy"),
		IptablesNft:    lookBin(src, "iptables-nft"),
		IP6tables:      lookBin(src, "ip6tables"),
		Nft:            lookBin(src, "nft"),
		Ipset:          lookBin(src, "ipset"),
	}
	if ipt.Iptables != "" {
		if final, err := resolve(src, strings.TrimPrefix(ipt.Iptables, "/")); err == nil {
			base := path.Base(final)
			switch {
			case strings.Contains(base, "legacy"):
				ipt.Mode = "legacy"
			case strings.Contains(base, "nft"):
				ipt.Mode = "nft"
			}
		}
	}
	return ipt
}
