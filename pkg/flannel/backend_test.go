package flannel

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestCheckName(t *testing.T) {
	for _, name := range Backends {
		if err := CheckName(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, bad := range []string{"foo", "wireguard", "host-gw", ""} {
		err := CheckName(bad)
		if err == nil || !strings.Contains(err.Error(), "--flannel-backend") || !strings.Contains(err.Error(), "vxlan, wireguard-native") {
			t.Errorf("%q: want an error naming the flag and the valid values, got %v", bad, err)
		}
	}
	if err := CheckBackend("foo"); err == nil {
		t.Error("CheckBackend accepts foo")
	}
	if err := CheckBackend(VXLAN); err != nil {
		t.Errorf("vxlan: %v", err)
	}
}

// TestWireGuardProbe creates the test interface in a network namespace of
// its own: on a kernel without WireGuard (this CI's) the error names the
// missing module; with it, the probe leaves no interface behind.
func TestWireGuardProbe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace, a netlink link)")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // also switches this thread into it
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	defer func() { _ = netns.Set(orig) }()

	err = wireGuardLink(probeLink)
	if _, statErr := os.Stat("/sys/module/wireguard"); statErr == nil && err != nil {
		t.Fatalf("the kernel has WireGuard loaded, the probe says: %v", err)
	}
	if err != nil {
		t.Logf("this kernel: %v", err)
		if !strings.Contains(err.Error(), "the kernel has no WireGuard module") || !strings.Contains(err.Error(), "--flannel-backend=vxlan") {
			t.Errorf("the error does not say what is missing and what to do instead: %v", err)
		}
		return
	}
	if _, err := netlink.LinkByName(probeLink); err == nil {
		t.Errorf("the probe left %s behind", probeLink)
	}
}
