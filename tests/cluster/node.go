package cluster

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// kernelSettings are the sysctls the kubelet changes; Down puts them back.
var kernelSettings = []string{"/proc/sys/kernel/panic", "/proc/sys/kernel/panic_on_oops", "/proc/sys/vm/overcommit_memory"}

// NodeOptions describe a node to add.
type NodeOptions struct {
	Host     string // pi1, pi2, ...: names the namespace and directory
	Index    int    // last octet of the IP (1..253)
	NodeName string // Kubernetes node name; default Host
	Role     string // RoleServer or RoleAgent
	// Images replace the cluster's image archives for this node when not nil.
	Images []string
}

// AddNode makes a node's network and mount namespaces, cgroup root and
// directories, and links the images into its data dir. It does not start
// bramble.
func (c *Cluster) AddNode(o NodeOptions) (*Node, error) {
	if o.NodeName == "" {
		o.NodeName = o.Host
	}
	if !validName(o.Host) || o.Index < 1 || o.Index > 253 {
		return nil, fmt.Errorf("node %q index %d: want a short name and an index 1..253", o.Host, o.Index)
	}
	if o.Role != RoleServer && o.Role != RoleAgent {
		return nil, fmt.Errorf("node %s: role %q", o.Host, o.Role)
	}
	if _, err := c.Node(o.Host); err == nil {
		return nil, fmt.Errorf("node %s exists already", o.Host)
	}
	for _, n := range c.Nodes() {
		if n.Index == o.Index {
			return nil, fmt.Errorf("node %s already has %s", n.Host, n.IP())
		}
	}
	n := &Node{
		Host: o.Host, Index: o.Index, NodeName: o.NodeName, Role: o.Role,
		NetNS:  c.cfg.Name + "-" + o.Host,
		Cgroup: "/" + c.cfg.Name + "-" + o.Host,
		Dir:    filepath.Join(c.cfg.StateDir, o.Host),
	}
	c.mu.Lock()
	if c.st.Kernel == nil {
		c.st.Kernel = map[string]string{}
		for _, f := range kernelSettings {
			if v, err := os.ReadFile(f); err == nil {
				c.st.Kernel[f] = strings.TrimSpace(string(v))
			}
		}
	}
	// Recorded before anything is made, so Down finds a half-made node.
	c.st.Nodes = append(c.st.Nodes, n)
	err := c.save()
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := c.createSwitch(); err != nil {
		return n, err
	}
	if err := c.createNodeNet(n); err != nil {
		return n, err
	}
	if err := createCgroup(n.Cgroup); err != nil {
		return n, err
	}
	images := c.cfg.Images
	if o.Images != nil {
		images = o.Images
	}
	if err := c.makeDirs(n, images); err != nil {
		return n, err
	}
	if err := c.startHolder(n); err != nil {
		return n, err
	}
	if err := c.setupMounts(n); err != nil {
		return n, err
	}
	return n, c.saveLocked()
}

// makeDirs creates the node's directories and links the images in.
func (c *Cluster) makeDirs(n *Node, archives []string) error {
	images := filepath.Join(n.DataDir(), "agent", "images")
	for _, d := range []string{n.Dir, images} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("node %s: %w", n.Host, err)
		}
	}
	for _, target := range privateMounts {
		if err := os.MkdirAll(n.privateDir(target), 0o755); err != nil {
			return fmt.Errorf("node %s: %w", n.Host, err)
		}
		// The bind mount's target must exist on the host.
		if _, err := os.Stat(target); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return fmt.Errorf("create mount point %s: %w", target, err)
			}
			c.mu.Lock()
			c.st.Created = append(c.st.Created, target)
			c.mu.Unlock()
		}
	}
	for _, img := range archives {
		dst := filepath.Join(images, filepath.Base(img))
		if err := linkOrCopy(img, dst); err != nil {
			return fmt.Errorf("node %s: image %s: %w", n.Host, img, err)
		}
	}
	return nil
}

func linkOrCopy(src, dst string) error { return placeFile(src, dst, true) }

// placeFile puts src at dst unless dst exists: a hard link where link is
// set and the file system allows, else a copy (with src's mode).
func placeFile(src, dst string, link bool) error {
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if link {
		err := os.Link(src, dst)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EXDEV) {
			return err
		}
	}
	info, err := os.Stat(src)
	if err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst+".tmp", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}

// startHolder starts the process that keeps the node's mount namespace
// alive: `ip netns exec` gives it a mount namespace of its own (with a /sys
// for the node's network namespace).
func (c *Cluster) startHolder(n *Node) error {
	log, err := os.OpenFile(filepath.Join(n.Dir, "holder.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command("ip", "netns", "exec", n.NetNS, "sleep", "infinity")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = nodeEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("node %s: start namespace holder: %w", n.Host, err)
	}
	c.reap(cmd)
	pid := cmd.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for commOf(pid) != "sleep" {
		if st, _, _, ok := procStat(pid); !ok || st == 'Z' || time.Now().After(deadline) {
			out, _ := os.ReadFile(log.Name())
			return fmt.Errorf("node %s: namespace holder did not start: %s", n.Host, strings.TrimSpace(string(out)))
		}
		time.Sleep(10 * time.Millisecond)
	}
	p, err := identify(pid)
	if err != nil {
		return err
	}
	c.mu.Lock()
	n.Holder = p
	err = c.save()
	c.mu.Unlock()
	return err
}

// reap waits for a child of this process so it does not linger as a zombie.
func (c *Cluster) reap(cmd *exec.Cmd) chan struct{} {
	done := make(chan struct{})
	c.mu.Lock()
	c.children[cmd.Process.Pid] = done
	c.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(done)
		c.mu.Lock()
		delete(c.children, cmd.Process.Pid)
		c.mu.Unlock()
	}()
	return done
}

// nodeEnv is the environment of everything started in a node: nothing of
// the caller's (no BRAMBLE_*, no KUBECONFIG) leaks in.
func nodeEnv(extra ...string) []string {
	return append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"}, extra...)
}

// InNode runs a command in the node's mount and network namespaces.
func (c *Cluster) InNode(n *Node, name string, args ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"--target", strconv.Itoa(n.Holder.PID), "--mount", "--net", "--", name}, args...)...)
	cmd.Env = nodeEnv()
	return cmd
}

// setupMounts prepares the node's mount namespace.
func (c *Cluster) setupMounts(n *Node) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	var s strings.Builder
	s.WriteString("set -eu\n")
	// Nothing of the host's mount events reaches the node, and back.
	s.WriteString("mount --make-rprivate /\n")
	// Mounts inherited under /run (the host's netns pins, ...) are not the
	// node's; its /run is a tmpfs of its own.
	s.WriteString(`awk '$5 ~ "^/run/" { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || :; done` + "\n")
	s.WriteString("mount -t tmpfs -o mode=0755,nosuid,nodev run /run\n")
	// `ip netns exec` mounted a fresh /sys: mount the cgroups again.
	rootV2 := len(hs) == 1 && hs[0].Mount == "/sys/fs/cgroup"
	if !rootV2 {
		s.WriteString("mount -t tmpfs -o mode=0755,nosuid,nodev,noexec cgroup /sys/fs/cgroup\n")
	}
	for _, h := range hs {
		fmt.Fprintf(&s, "mkdir -p %s\n", quote(h.Mount))
		if h.FSType == "cgroup2" {
			fmt.Fprintf(&s, "mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 %s\n", quote(h.Mount))
		} else {
			fmt.Fprintf(&s, "mount -t cgroup -o nosuid,nodev,noexec,%s cgroup %s\n", h.Opts, quote(h.Mount))
		}
	}
	for name, target := range cgroupSymlinks() {
		fmt.Fprintf(&s, "ln -s %s %s\n", quote(target), quote(filepath.Join("/sys/fs/cgroup", name)))
	}
	for _, target := range privateMounts {
		fmt.Fprintf(&s, "mount --bind %s %s\n", quote(n.privateDir(target)), quote(target))
	}
	// kubelet and containerd need mount propagation; with / shared bramble
	// does not make a mount namespace of its own.
	s.WriteString("mount --make-rshared /\n")
	out, err := c.InNode(n, "/bin/sh", "-c", s.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("node %s: prepare mount namespace: %w: %s", n.Host, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ServerArgs are the arguments of a server node.
func (c *Cluster) ServerArgs(n *Node) []string {
	return append([]string{"server", "--data-dir", n.DataDir(), "--node-name", n.NodeName, "--node-ip", n.IP(),
		"--write-kubeconfig", filepath.Join(n.DataDir(), "kubeconfig.yaml"), "--kubelet-arg=cgroup-root=" + n.Cgroup}, c.cfg.ServerArgs...)
}

// AgentArgs are the arguments of an agent node joining server.
func (c *Cluster) AgentArgs(n, server *Node) []string {
	return []string{"agent", "--server", fmt.Sprintf("https://%s:%d", server.IP(), APIPort), "--data-dir", n.DataDir(),
		"--node-name", n.NodeName, "--node-ip", n.IP(), "--kubelet-arg=cgroup-root=" + n.Cgroup}
}

// Token is the server's join token.
func (c *Cluster) Token() (string, error) {
	s, err := c.Server()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(s.DataDir(), "server", "token"))
	if err != nil {
		return "", fmt.Errorf("server token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Running is a bramble process started by this process.
type Running struct {
	Proc
	done chan struct{}
	cmd  *exec.Cmd
}

// Done is closed when the process exited.
func (r *Running) Done() <-chan struct{} { return r.done }

// ExitCode is the exit status once Done is closed.
func (r *Running) ExitCode() int { return r.cmd.ProcessState.ExitCode() }

// StartServer starts bramble server on a server node.
func (c *Cluster) StartServer(n *Node, extra ...string) (*Running, error) {
	return c.Start(n, append(c.ServerArgs(n), extra...), nil)
}

// StartAgent starts bramble agent on a node, joining the cluster's server
// with token (BRAMBLE_TOKEN in its environment, never on its command line).
func (c *Cluster) StartAgent(n *Node, token string, extra ...string) (*Running, error) {
	s, err := c.Server()
	if err != nil {
		return nil, err
	}
	return c.Start(n, append(c.AgentArgs(n, s), extra...), []string{"BRAMBLE_TOKEN=" + token})
}

// Start starts bramble with args in the node's namespaces, in the node's
// cgroup in every hierarchy (so containerd and the shims are too), output
// appended to the node's log.
func (c *Cluster) Start(n *Node, args, env []string) (*Running, error) {
	if n.Process.Alive() {
		return nil, fmt.Errorf("node %s: bramble runs already (pid %d)", n.Host, n.Process.PID)
	}
	if !n.Holder.Alive() {
		return nil, fmt.Errorf("node %s: its namespace holder is gone: down and up the cluster", n.Host)
	}
	log, err := os.OpenFile(n.LogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	fmt.Fprintf(log, "==== %s bramble %s\n", time.Now().UTC().Format(time.RFC3339), strings.Join(args, " "))
	bin := c.cfg.Binary
	if c.cfg.BinaryPerNode {
		bin = filepath.Join(n.Dir, "bramble")
		if err := placeFile(c.cfg.Binary, bin, false); err != nil {
			return nil, fmt.Errorf("node %s: its own copy of bramble: %w", n.Host, err)
		}
	}
	script := `for f in /sys/fs/cgroup/*` + n.Cgroup + `/cgroup.procs; do echo $$ > "$f"; done; exec "$@"`
	cmd := c.InNode(n, "/bin/sh", append([]string{"-c", script, "sh", bin}, args...)...)
	cmd.Env = nodeEnv(env...)
	cmd.Dir = n.Dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("node %s: start bramble: %w", n.Host, err)
	}
	done := c.reap(cmd)
	p, err := identify(cmd.Process.Pid)
	if err != nil {
		<-done
		return nil, fmt.Errorf("node %s: bramble exited at once (status %d): see %s", n.Host, cmd.ProcessState.ExitCode(), n.LogFile())
	}
	c.cfg.Logf("%s node %s: bramble %s started, pid %d", started.UTC().Format("15:04:05.000"), n.Host, args[0], p.PID)
	c.mu.Lock()
	n.Process, n.Args, n.Started = p, args, started
	err = c.save()
	c.mu.Unlock()
	return &Running{Proc: p, done: done, cmd: cmd}, err
}

// Stop stops the node's bramble (SIGTERM, SIGKILL after grace) like a
// service stop: its pods keep running. It returns how long that took.
func (c *Cluster) Stop(n *Node, grace time.Duration) (time.Duration, error) {
	begin := time.Now()
	if !n.Process.Alive() {
		return 0, nil
	}
	killed := n.Process.terminate(grace)
	took := time.Since(begin)
	c.cfg.Logf("%s node %s: bramble pid %d stopped after %.1f s", time.Now().UTC().Format("15:04:05.000"), n.Host, n.Process.PID, took.Seconds())
	if killed {
		return took, fmt.Errorf("node %s: bramble needed SIGKILL after %s", n.Host, grace)
	}
	return took, nil
}

// Restart starts the node's bramble again with the arguments of its last
// start; an agent gets the server token again.
func (c *Cluster) Restart(n *Node) (*Running, error) {
	if len(n.Args) == 0 {
		return nil, fmt.Errorf("node %s was never started", n.Host)
	}
	var env []string
	if n.Role == RoleAgent {
		token, err := c.Token()
		if err != nil {
			return nil, err
		}
		env = append(env, "BRAMBLE_TOKEN="+token)
	}
	return c.Start(n, n.Args, env)
}

// LogTail is the last max bytes of the node's bramble log.
func (n *Node) LogTail(max int) string {
	b, _ := os.ReadFile(n.LogFile())
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// ContainerdPID finds the node's containerd (bramble's child, the helper
// bundle's containerd executable).
func (n *Node) ContainerdPID() int {
	for _, pid := range descendants(n.Process.PID) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(string(cmdline), "\x00")
		if filepath.Base(args[0]) == "containerd" {
			return pid
		}
	}
	return 0
}

// Wipe makes node n a fresh machine behind the same cable: its bramble must
// be stopped; its containers are stopped (bramble-killall.sh), its data dir
// and the fixed dirs (kubelet, CNI, pod logs, /etc/bramble) emptied, and the
// image archives linked in again. keep, a path outside the node's dirs, is
// what the "machine" brings back (a USB stick with a snapshot): untouched.
func (c *Cluster) Wipe(n *Node) error {
	if n.Process.Alive() {
		return fmt.Errorf("node %s: stop bramble before wiping the node", n.Host)
	}
	if err := c.killall(n); err != nil {
		return err
	}
	dirs := append([]string{n.DataDir()}, privateMounts...)
	var s strings.Builder
	s.WriteString("set -eu\n")
	for _, d := range dirs {
		fmt.Fprintf(&s, "find %s -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system {} +\n", quote(d))
	}
	if out, err := c.InNode(n, "/bin/sh", "-c", s.String()).CombinedOutput(); err != nil {
		return fmt.Errorf("node %s: wipe: %w: %s", n.Host, err, strings.TrimSpace(string(out)))
	}
	return c.makeDirs(n, c.cfg.Images)
}
