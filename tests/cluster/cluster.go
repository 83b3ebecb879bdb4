// Package cluster builds a bramble of N "Pis" on one machine for tests and
// developers: a switch network namespace holding a bridge (10.250.0.0/24, no
// link to the host, no forwarding, so nothing a node sends leaves the
// machine), and per node a network namespace with a veth to the bridge, a
// mount namespace kept alive by a holder process (private /run, private
// kubelet/CNI/pod-log/config dirs, cgroup hierarchies mounted again, /
// rshared), its own kubelet cgroup root, and its own data dir. A bramble
// restart is a service restart: the namespaces outlive the process.
//
// Everything the cluster creates is recorded in <state-dir>/state.json; Down
// removes it, also after a crash or a half-made cluster, by recorded PIDs
// and by names.
package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bramble-pi/bramble/pkg/atomicfile"
)

const (
	// SubnetPrefix is the nodes' /24: node N has SubnetPrefix+N.
	SubnetPrefix = "10.250.0."
	// SwitchIP is the bridge's address in the switch namespace, the nodes'
	// default gateway (it forwards nothing).
	SwitchIP = SubnetPrefix + "254"
	// DefaultName prefixes the namespaces and cgroups of the developer cluster.
	DefaultName = "bramble"
	// DefaultStateDir holds the developer cluster's state.
	DefaultStateDir = "/var/lib/bramble-cluster"
	// APIPort is the server's supervisor and apiserver port.
	APIPort = 6443
)

// Roles of a node.
const (
	RoleServer = "server"
	RoleAgent  = "agent"
)

// Config says where a cluster lives and what it runs.
type Config struct {
	// Name prefixes the network namespaces (<name>-sw, <name>-pi1, ...) and
	// the cgroup roots (/<name>-pi1): two clusters with different names
	// coexist.
	Name string
	// StateDir holds state.json, the admin kubeconfig and one directory per
	// node (data dir, kubelet dir, logs).
	StateDir string
	// Binary is bin/bramble.
	Binary string
	// BinaryPerNode runs each node from its own copy of Binary, as each Pi
	// has its own: the pages of the executable are then not shared between
	// nodes, and a node's memory is what it would be on a machine of its
	// own (the bench's figures).
	BinaryPerNode bool
	// ServerArgs are extra arguments of the server.
	ServerArgs []string
	// Killall is scripts/bramble-killall.sh (optional: Down works without).
	Killall string
	// Images are archives hard-linked (or copied) into every node's
	// <data-dir>/agent/images before it starts, so nothing is pulled.
	Images []string
	// Logf reports progress (optional).
	Logf func(format string, args ...any)
}

// Cluster is a set of nodes behind one switch.
type Cluster struct {
	cfg Config

	mu sync.Mutex
	st state
	// children started by this process, reaped by their own goroutine.
	children map[int]chan struct{}
}

type state struct {
	Name   string
	Switch string
	Nodes  []*Node
	// Kernel holds the values of the sysctls the kubelet changes, as they
	// were before the first node started.
	Kernel map[string]string `json:",omitempty"`
	// Created lists host directories made as mount points, removed by Down
	// when empty.
	Created []string `json:",omitempty"`
}

// Node is one "Pi".
type Node struct {
	Host     string    // pi1: names the namespace and the node's directory
	Index    int       // last octet of the node's IP
	NodeName string    // Kubernetes node name (usually Host)
	Role     string    // RoleServer or RoleAgent
	NetNS    string    // <name>-pi1
	Cgroup   string    // /<name>-pi1
	Dir      string    // <state-dir>/pi1
	Holder   Proc      // keeps the mount namespace alive
	Process  Proc      // bramble, while running
	Args     []string  // bramble's arguments at the last start
	Started  time.Time // last start of bramble
}

// Proc identifies a process by PID and start time, so a recycled PID is
// never signalled.
type Proc struct {
	PID   int    `json:",omitempty"`
	Start uint64 `json:",omitempty"` // field 22 of /proc/PID/stat
}

// IP is the node's address.
func (n *Node) IP() string { return SubnetPrefix + strconv.Itoa(n.Index) }

// DataDir is the node's bramble data dir.
func (n *Node) DataDir() string { return filepath.Join(n.Dir, "data") }

// LogFile is where bramble's output goes.
func (n *Node) LogFile() string { return filepath.Join(n.Dir, "bramble.log") }

// NetNSPath is the node's network namespace file.
func (n *Node) NetNSPath() string { return "/run/netns/" + n.NetNS }

func (n *Node) privateDir(target string) string {
	return filepath.Join(n.Dir, "mnt", strings.ReplaceAll(strings.TrimPrefix(target, "/"), "/", "-"))
}

// privateMounts are bind-mounted from the node's directory in its mount
// namespace: bramble uses these fixed paths whatever its data dir.
var privateMounts = []string{"/var/lib/kubelet", "/var/lib/cni", "/var/log/pods", "/var/log/containers", "/etc/bramble"}

// New prepares a cluster handle; it creates nothing. If the state dir holds
// a state.json (a cluster made earlier, perhaps by another process), it is
// loaded.
func New(cfg Config) (*Cluster, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if !validName(cfg.Name) {
		return nil, fmt.Errorf("cluster name %q: use 1-8 letters, digits or '-'", cfg.Name)
	}
	var err error
	if cfg.StateDir, err = filepath.Abs(cfg.StateDir); err != nil {
		return nil, err
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	c := &Cluster{cfg: cfg, children: map[int]chan struct{}{}}
	c.st = state{Name: cfg.Name, Switch: cfg.Name + "-sw"}
	data, err := os.ReadFile(c.statePath())
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read cluster state: %w", err)
	default:
		if err := json.Unmarshal(data, &c.st); err != nil {
			return nil, fmt.Errorf("cluster state %s: %w", c.statePath(), err)
		}
		if c.st.Name != cfg.Name {
			return nil, fmt.Errorf("%s belongs to cluster %q, not %q", c.statePath(), c.st.Name, cfg.Name)
		}
	}
	return c, nil
}

// validName keeps interface and namespace names short and plain.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 8 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.cfg.Name }

// StateDir is where the cluster keeps its state.
func (c *Cluster) StateDir() string { return c.cfg.StateDir }

// SwitchNetNS is the switch's network namespace file: the only way into the
// cluster from outside.
func (c *Cluster) SwitchNetNS() string { return "/run/netns/" + c.st.Switch }

// Nodes lists the nodes in the order they were added.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.st.Nodes...)
}

// Node finds a node by host name (pi1, ...).
func (c *Cluster) Node(host string) (*Node, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.st.Nodes {
		if n.Host == host {
			return n, nil
		}
	}
	return nil, fmt.Errorf("cluster %s has no node %q", c.cfg.Name, host)
}

// Server is the first server node.
func (c *Cluster) Server() (*Node, error) {
	for _, n := range c.Nodes() {
		if n.Role == RoleServer {
			return n, nil
		}
	}
	return nil, fmt.Errorf("cluster %s has no server", c.cfg.Name)
}

// KubeconfigPath is the admin kubeconfig, pointing at the server's node IP
// (use it from the switch namespace: `ip netns exec <name>-sw kubectl ...`).
func (c *Cluster) KubeconfigPath() string { return filepath.Join(c.cfg.StateDir, "kubeconfig.yaml") }

func (c *Cluster) statePath() string { return filepath.Join(c.cfg.StateDir, "state.json") }

// save writes state.json atomically; callers hold c.mu or own c.
func (c *Cluster) save() error {
	data, err := json.MarshalIndent(&c.st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode cluster state: %w", err)
	}
	if err := atomicfile.Write(c.statePath(), data, 0o600); err != nil {
		return fmt.Errorf("cluster state: %w", err)
	}
	return nil
}

func (c *Cluster) saveLocked() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.save()
}

// run runs a command and returns its combined output, with the command in
// the error.
func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
