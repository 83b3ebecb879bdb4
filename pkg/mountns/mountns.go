// Package mountns gives a node a mount namespace of its own, with / made
// rshared, when the host's / is not shared (kubelet and containerd need mount
// propagation). The namespace is pinned with a bind mount so that a restarted
// bramble joins the same namespace its running pods live in: a restart is a
// service restart, not a reboot.
package mountns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bramble-pi/bramble/pkg/mountinfo"
)

// marker is set in the environment of the re-executed process.
const marker = "BRAMBLE_MOUNT_NAMESPACE"

// Enter makes sure the current process runs with a shared /. If / is shared
// already, it does nothing. Otherwise, on the first call it re-executes the
// process (same PID) inside a pinned namespace at pin, through util-linux's
// unshare or nsenter; in the re-executed process it makes / rshared and
// returns. Enter only returns in the process that should go on.
func Enter(pin string) error {
	if os.Getenv(marker) == pin {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
			return fmt.Errorf("make / rshared in bramble's mount namespace: %w", err)
		}
		return nil
	}
	shared, err := RootShared()
	if err != nil {
		return err
	}
	if shared {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	env := append(os.Environ(), marker+"="+pin)
	pinned, err := isNSFS(pin)
	if err != nil {
		return err
	}
	var argv []string
	if pinned {
		argv = append([]string{"nsenter", "--mount=" + pin, "--"}, append([]string{self}, os.Args[1:]...)...)
	} else {
		if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(pin), err)
		}
		if err := os.WriteFile(pin, nil, 0o600); err != nil {
			return fmt.Errorf("create mount namespace pin %s: %w", pin, err)
		}
		argv = append([]string{"unshare", "--mount=" + pin, "--propagation", "unchanged", "--"}, append([]string{self}, os.Args[1:]...)...)
	}
	tool, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("/ is not a shared mount and %s (util-linux) is missing: %w", argv[0], err)
	}
	if err := syscall.Exec(tool, argv, env); err != nil {
		return fmt.Errorf("re-execute in a mount namespace: %w", err)
	}
	return errors.New("unreachable")
}

// RootShared says whether / is a shared mount in this mount namespace.
func RootShared() (bool, error) {
	mounts, err := mountinfo.Read()
	if err != nil {
		return false, err
	}
	root := mountinfo.Find(mounts, "/")
	if root == nil {
		return false, errors.New("/ not found in /proc/self/mountinfo")
	}
	return root.Shared(), nil
}

// isNSFS says whether path is a bind-mounted namespace file.
func isNSFS(path string) (bool, error) {
	mounts, err := mountinfo.Read()
	if err != nil {
		return false, err
	}
	m := mountinfo.Find(mounts, path)
	return m != nil && m.FSType == "nsfs", nil
}
