package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/pkg/hostcheck"
)

// checkConfigCommand is `bramble check-config`: the host report of
// hostcheck.Facts.Report, and with --fix-cgroups the Raspberry Pi
// cmdline.txt edit that turns the memory cgroup on at the next boot.
func checkConfigCommand() *cli.Command {
	return &cli.Command{
		Name:  "check-config",
		Usage: "report what the kernel and host provide for a node, with the fix for anything missing",
		Description: "Prints one line per check: [ok], [warn] or [MISSING] with the exact fix.\n" +
			"Exits 1 when something a node requires is missing.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "fix-cgroups", Usage: "when the kernel command line switches the memory cgroup off (Raspberry Pi), add cgroup_memory=1 cgroup_enable=memory to cmdline.txt (a backup is kept; reboot afterwards)", EnvVars: env("fix-cgroups")},
			&cli.StringFlag{Name: "boot-dir", Usage: "directory holding cmdline.txt (default: /boot/firmware on bookworm, else /boot)", EnvVars: env("boot-dir")},
			// Tests read a sample host tree instead of /.
			&cli.StringFlag{Name: "host-root", Value: "/", Hidden: true, EnvVars: env("host-root")},
		},
		Action: runCheckConfig,
	}
}

func runCheckConfig(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("check-config takes no arguments, got %q", c.Args().Slice())
	}
	root := c.String("host-root")
	if root == "" {
		root = "/"
	}
	facts, err := hostcheck.DetectFrom(os.DirFS(root))
	if err != nil {
		return fmt.Errorf("check-config: %w", err)
	}
	out := c.App.Writer
	missing, err := hostcheck.WriteReport(out, facts.Report())
	if err != nil {
		return err
	}
	if c.Bool("fix-cgroups") {
		if err := fixCgroups(c, root, facts); err != nil {
			return err
		}
	} else if c.String("boot-dir") != "" {
		return errors.New("--boot-dir is only used with --fix-cgroups")
	}
	if missing > 0 {
		return cli.Exit("", 1)
	}
	return nil
}

func fixCgroups(c *cli.Context, root string, facts hostcheck.Facts) error {
	out := c.App.Writer
	if !facts.MemoryOffByCmdline() {
		_, err := fmt.Fprintln(out, "fix-cgroups: the kernel command line does not switch the memory cgroup off: nothing to change")
		return err
	}
	file := ""
	switch {
	case c.String("boot-dir") != "":
		file = filepath.Join(c.String("boot-dir"), "cmdline.txt")
	case facts.BootCmdline != "":
		file = filepath.Join(root, facts.BootCmdline)
	default:
		return fmt.Errorf("fix-cgroups: no Raspberry Pi cmdline.txt found (looked at %s and %s): add %q to your kernel command line by hand, or name the directory with --boot-dir",
			hostcheck.PiFirmwareCmdline, hostcheck.PiLegacyCmdline, hostcheck.CmdlineMemoryFix)
	}
	res, err := hostcheck.FixBootCmdline(file)
	if err != nil {
		return fmt.Errorf("fix-cgroups: %w", err)
	}
	if !res.Changed {
		_, err = fmt.Fprintf(out, "fix-cgroups: %s already enables the memory cgroup (no change); reboot to use it: sudo reboot\n", file)
		return err
	}
	_, err = fmt.Fprintf(out, "fix-cgroups: edited %s (previous contents in %s)\n  before: %s\n  after:  %s\nfix-cgroups: reboot to enable the memory cgroup: sudo reboot\n",
		file, res.Backup, res.Old, res.New)
	return err
}
