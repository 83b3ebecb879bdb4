package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// nodeRun is a `bramble server` with its node, started for a scenario.
type nodeRun struct {
	p          *proc
	dir        string
	data       string
	kubeconfig string
	root       string
	bin        string
	args       []string
}

// startNode starts a server with a node in a fresh data dir, with the given
// image archives (paths relative to the repository) linked into agent/images.
func startNode(bin string, shipped bool, images ...string) (*nodeRun, error) {
	root := filepath.Dir(filepath.Dir(bin))
	dir, err := os.MkdirTemp("", "bramble-bench-")
	if err != nil {
		return nil, err
	}
	n := &nodeRun{dir: dir, data: filepath.Join(dir, "data"), kubeconfig: filepath.Join(dir, "kubeconfig"), root: root}
	imagesDir := filepath.Join(n.data, "agent", "images")
	if err := os.MkdirAll(imagesDir, 0o700); err != nil {
		return nil, err
	}
	for _, img := range images {
		src := filepath.Join(root, img)
		if _, err := os.Stat(src); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("image archive (make test-images airgap): %w", err)
		}
		if err := os.Symlink(src, filepath.Join(imagesDir, filepath.Base(src))); err != nil {
			return nil, err
		}
	}
	n.bin = bin
	n.args = []string{"server", "--data-dir", n.data, "--write-kubeconfig", n.kubeconfig, "--config", "/dev/null",
		fmt.Sprintf("--shipped-images=%t", shipped)}
	if !shipped {
		// Without their images the add-ons' pods would sit in
		// ImagePullBackOff: retries, events and status writes that are
		// neither idle nor what a user runs. The footprint goals' server
		// figures are for bramble without its add-ons (the addons
		// scenario measures the bundle).
		n.args = append(n.args, "--disable", "coredns,traefik,plumber-api")
	}
	n.p, err = start(bin, n.args)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return n, nil
}

// restart stops bramble with SIGTERM and starts it again on the same data
// dir. It returns how long the stop took. The start is at least the next
// whole second after the old process exited: a node's heartbeat
// (lastHeartbeatTime) has a resolution of one second, so any heartbeat in the
// second of the new start or later is the new process's.
func (n *nodeRun) restart() (time.Duration, error) {
	took := n.p.stop(15 * time.Second)
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	p, err := start(n.bin, n.args)
	if err != nil {
		return took, err
	}
	n.p = p
	return took, nil
}

// stop stops bramble, removes what the node left behind and the data dir.
func (n *nodeRun) stop() {
	n.p.stop(15 * time.Second)
	cmd := exec.Command(filepath.Join(n.root, "scripts", "bramble-killall.sh"))
	cmd.Env = append(os.Environ(), "BRAMBLE_DATA_DIR="+n.data)
	_ = cmd.Run()
	os.RemoveAll(n.dir)
}
