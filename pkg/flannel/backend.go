package flannel

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
)

// The backends bramble offers (--flannel-backend), k3s's names.
const (
	VXLAN           = "vxlan"
	WireGuardNative = "wireguard-native"
)

// Backends are the valid --flannel-backend values.
var Backends = []string{VXLAN, WireGuardNative}

// flannelType is flannel's own name of each backend (net-conf.json).
var flannelType = map[string]string{VXLAN: "vxlan", WireGuardNative: "wireguard"}

// CheckName refuses a backend name bramble does not offer.
func CheckName(name string) error {
	if _, ok := flannelType[name]; !ok {
		return fmt.Errorf("--flannel-backend: %q is not a backend; use one of %s", name, strings.Join(Backends, ", "))
	}
	return nil
}

// CheckBackend refuses a backend this node cannot run: an unknown name, or
// wireguard-native on a kernel without WireGuard (found by creating and
// deleting a WireGuard interface, which also loads the module).
func CheckBackend(name string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if name != WireGuardNative {
		return nil
	}
	return wireGuardLink(probeLink)
}

const probeLink = "bramble-wgprobe"

func wireGuardLink(name string) error {
	link := &netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: name}, LinkType: "wireguard"}
	err := netlink.LinkAdd(link)
	switch {
	case err == nil:
		if err := netlink.LinkDel(link); err != nil {
			return fmt.Errorf("--flannel-backend=%s: remove the test interface %s: %w", WireGuardNative, name, err)
		}
		return nil
	case errors.Is(err, syscall.EEXIST):
		return nil
	case errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENODEV):
		return fmt.Errorf("--flannel-backend=%s: the kernel has no WireGuard module: creating a wireguard interface failed (%w); "+
			"it needs Linux 5.6 or later with CONFIG_WIREGUARD (modprobe wireguard), or use --flannel-backend=%s", WireGuardNative, err, VXLAN)
	default:
		return fmt.Errorf("--flannel-backend=%s: cannot create a wireguard interface: %w", WireGuardNative, err)
	}
}
