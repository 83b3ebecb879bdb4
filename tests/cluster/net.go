package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const bridge = "br0"

// netnsExists says whether a named network namespace exists.
func netnsExists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}

// ListNetNS lists the named network namespaces starting with prefix. It
// reads /run/netns rather than asking `ip netns list`, which waits for the
// kernel to finish tearing down namespaces deleted a moment ago.
func ListNetNS(prefix string) []string {
	entries, _ := os.ReadDir("/run/netns")
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

// createSwitch makes the switch namespace: a bridge with SwitchIP, IP
// forwarding off, and no link anywhere but to the nodes.
func (c *Cluster) createSwitch() error {
	sw := c.st.Switch
	if netnsExists(sw) {
		return nil
	}
	steps := [][]string{
		{"ip", "netns", "add", sw},
		{"ip", "-n", sw, "link", "set", "lo", "up"},
		{"ip", "-n", sw, "link", "add", bridge, "type", "bridge"},
		{"ip", "-n", sw, "addr", "add", SwitchIP + "/24", "dev", bridge},
		{"ip", "-n", sw, "link", "set", bridge, "up"},
		{"ip", "netns", "exec", sw, "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"},
	}
	for _, s := range steps {
		if _, err := run(s[0], s[1:]...); err != nil {
			return fmt.Errorf("switch: %w", err)
		}
	}
	return nil
}

// createNodeNet makes the node's namespace and its veth to the bridge.
func (c *Cluster) createNodeNet(n *Node) error {
	sw, ns := c.st.Switch, n.NetNS
	port := "v-" + n.Host
	steps := [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "-n", sw, "link", "set", port, "master", bridge, "up"},
		{"ip", "-n", ns, "addr", "add", n.IP() + "/24", "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		// kube-proxy's DNAT of a ClusterIP on locally made traffic needs a
		// route for the ClusterIP: the switch answers nothing, it only
		// makes one.
		{"ip", "-n", ns, "route", "add", "default", "via", SwitchIP},
	}
	for _, s := range steps {
		if _, err := run(s[0], s[1:]...); err != nil {
			return fmt.Errorf("node %s network: %w", n.Host, err)
		}
	}
	return nil
}

// deleteNetNS deletes a named network namespace if it exists.
func deleteNetNS(name string) error {
	if !netnsExists(name) {
		return nil
	}
	_, err := run("ip", "netns", "delete", name)
	return err
}

// DialContext returns a dial function whose sockets live in the network
// namespace at nsPath: the calling thread enters it only to create the
// socket, and the connection stays there.
func DialContext(nsPath string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			conn net.Conn
			err  error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			conn, err, restored := dialIn(ctx, nsPath, network, addr)
			if restored {
				runtime.UnlockOSThread()
			} // else the thread stays locked and dies with this goroutine
			ch <- result{conn, err}
		}()
		r := <-ch
		return r.conn, r.err
	}
}

func dialIn(ctx context.Context, nsPath, network, addr string) (conn net.Conn, err error, restored bool) {
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, fmt.Errorf("open own network namespace: %w", err), true
	}
	defer self.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", nsPath, err), true
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("enter network namespace %s: %w", nsPath, err), true
	}
	var d net.Dialer
	conn, err = d.DialContext(ctx, network, addr)
	restored = unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil
	return conn, err, restored
}

// HTTPClient is a plain HTTP client whose connections start in the switch
// namespace: it reaches the nodes' IPs and nothing else.
func (c *Cluster) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext:       DialContext(c.SwitchNetNS()),
		DisableKeepAlives: true,
	}}
}

// SetLink takes node n's cable out (up=false) or puts it back: its port on
// the switch goes down, so the node's eth0 loses its carrier, as when a Pi's
// Wi-Fi or switch port fails. Everything on the node keeps running.
func (c *Cluster) SetLink(n *Node, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	if _, err := run("ip", "-n", c.st.Switch, "link", "set", "v-"+n.Host, state); err != nil {
		return fmt.Errorf("node %s link %s: %w", n.Host, state, err)
	}
	return nil
}
