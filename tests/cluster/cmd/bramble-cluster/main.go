// Command bramble-cluster runs a bramble of N "Pis" on this machine, one
// network and mount namespace per node behind a switch namespace (see
// package tests/cluster). Run it as root from the repository root:
//
//	bramble-cluster up [-n 3]       make the cluster, wait for every node Ready
//	bramble-cluster down            remove everything it made (also after a crash)
//	bramble-cluster status          nodes, PIDs, namespaces
//	bramble-cluster kubectl ARGS    kubectl from the switch namespace
//	bramble-cluster stop|start NODE stop or start bramble on one node (pi2, ...)
//	bramble-cluster exec NODE CMD   run CMD in a node's namespaces
//
// Flags before the command: -name (default bramble), -state-dir (default
// /var/lib/bramble-cluster), -bin (default bin/bramble).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/bramble-pi/bramble/tests/cluster"
)

func main() {
	name := flag.String("name", cluster.DefaultName, "cluster name (prefix of namespaces and cgroups)")
	stateDir := flag.String("state-dir", cluster.DefaultStateDir, "directory for node data, logs and state")
	bin := flag.String("bin", "bin/bramble", "bramble binary")
	killall := flag.String("killall", "scripts/bramble-killall.sh", "killall script run in each node at down")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [flags] up [-n N] | down | status | kubectl ARGS | stop NODE | start NODE | exec NODE CMD...\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fail(errors.New("needs root (network and mount namespaces, cgroups)"))
	}
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			fail(err)
		}
		return a
	}
	cfg := cluster.Config{
		Name: *name, StateDir: *stateDir, Binary: abs(*bin), Killall: abs(*killall),
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "bramble-cluster: "+f+"\n", a...) },
	}
	for _, img := range []string{
		filepath.Join("dist", "bramble-airgap-images-"+runtime.GOARCH+".tar.zst"),
		filepath.Join("dist", "images", runtime.GOARCH, "busybox.tar"),
	} {
		if _, err := os.Stat(img); err == nil {
			cfg.Images = append(cfg.Images, abs(img))
		} else {
			cfg.Logf("warning: %s missing (make airgap test-images): nodes would have to pull", img)
		}
	}
	c, err := cluster.New(cfg)
	if err != nil {
		fail(err)
	}
	args := flag.Args()
	switch args[0] {
	case "up":
		fs := flag.NewFlagSet("up", flag.ExitOnError)
		n := fs.Int("n", 3, "number of nodes (pi1 is the server)")
		timeout := fs.Duration("timeout", 5*time.Minute, "give up after")
		_ = fs.Parse(args[1:])
		if _, err := os.Stat(cfg.Binary); err != nil {
			fail(fmt.Errorf("%s missing: run make", cfg.Binary))
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		t, err := c.Up(ctx, *n)
		if err != nil {
			fail(fmt.Errorf("%w\n(the cluster is left for inspection: logs in %s/pi*/bramble.log; remove it with `make cluster-down`)", err, c.StateDir()))
		}
		fmt.Printf("cluster %s: %d nodes Ready in %.1f s (server API %.1f s, server node Ready %.1f s, agents Ready %.1f s)\n",
			c.Name(), *n, t.Total.Seconds(), t.ServerAPI.Seconds(), t.ServerReady.Seconds(), t.AgentsReady.Seconds())
		fmt.Printf("  kubectl:  ip netns exec %s-sw %s kubectl --kubeconfig %s get nodes\n", c.Name(), cfg.Binary, c.KubeconfigPath())
		fmt.Printf("  curl:     ip netns exec %s-sw curl http://10.250.0.1/parity?int=15\n", c.Name())
		fmt.Printf("  logs:     %s/pi*/bramble.log\n", c.StateDir())
	case "down":
		if err := c.Down(); err != nil {
			fail(err)
		}
		if left := cluster.Leftovers(c.Name(), c.StateDir()); len(left) > 0 {
			fail(fmt.Errorf("left behind: %v", left))
		}
		fmt.Printf("cluster %s removed\n", c.Name())
	case "status":
		nodes := c.Nodes()
		if len(nodes) == 0 {
			fmt.Printf("cluster %s: no nodes (state dir %s)\n", c.Name(), c.StateDir())
		}
		for _, n := range nodes {
			fmt.Printf("%-5s %-6s %-13s node=%-5s bramble pid=%-7d running=%-5v holder pid=%-7d alive=%v\n",
				n.Host, n.Role, n.IP(), n.NodeName, n.Process.PID, n.Process.Alive(), n.Holder.PID, n.Holder.Alive())
		}
	case "kubectl":
		cmd := c.KubectlCmd(context.Background(), args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		exit(cmd.Run())
	case "stop", "start", "exec":
		if len(args) < 2 {
			flag.Usage()
			os.Exit(2)
		}
		n, err := c.Node(args[1])
		if err != nil {
			fail(err)
		}
		switch args[0] {
		case "stop":
			took, err := c.Stop(n, 20*time.Second)
			if err != nil {
				fail(err)
			}
			fmt.Printf("%s stopped in %.1f s\n", n.Host, took.Seconds())
		case "start":
			if _, err := c.Restart(n); err != nil {
				fail(err)
			}
			fmt.Printf("%s started (log %s)\n", n.Host, n.LogFile())
		case "exec":
			if len(args) < 3 {
				flag.Usage()
				os.Exit(2)
			}
			cmd := c.InNode(n, args[2], args[3:]...)
			cmd.Env = append(cmd.Env, "BRAMBLE_DATA_DIR="+n.DataDir())
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			exit(cmd.Run())
		}
	default:
		flag.Usage()
		os.Exit(2)
	}
}

func exit(err error) {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			os.Exit(ws.ExitStatus())
		}
		os.Exit(1)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "bramble-cluster: %v\n", err)
	os.Exit(1)
}
