package flannel

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// bridgeConf is what the test reads back from the bridge plugin's entry.
type bridgeConf struct {
	Type             string `json:"type"`
	Bridge           string `json:"bridge"`
	IsDefaultGateway bool   `json:"isDefaultGateway"`
	IPMasq           bool   `json:"ipMasq"`
	HairpinMode      bool   `json:"hairpinMode"`
	MTU              int    `json:"mtu"`
}

// ipamConf is the bridge's host-local section, as host-local reads it.
type ipamConf struct {
	IPAM struct {
		Type    string `json:"type"`
		DataDir string `json:"dataDir"`
		Ranges  [][]struct {
			Subnet string `json:"subnet"`
		} `json:"ranges"`
		Routes []struct {
			Dst string `json:"dst"`
		} `json:"routes"`
	} `json:"ipam"`
}

// ipamOf reads the host-local section of the bridge plugin's entry.
func ipamOf(t *testing.T, bridge []byte) ipamConf {
	t.Helper()
	var c ipamConf
	if err := json.Unmarshal(bridge, &c); err != nil {
		t.Fatal(err)
	}
	if c.IPAM.Type != "host-local" || len(c.IPAM.Ranges) != 1 || len(c.IPAM.Ranges[0]) != 1 {
		t.Fatalf("ipam %+v: want host-local with one range", c.IPAM)
	}
	return c
}

func TestWriteCNIConfig(t *testing.T) {
	tests := []struct {
		name             string
		podCIDR, cluster string
		mtu              int
	}{
		{"vxlan on ethernet", "10.42.1.0/24", "10.42.0.0/16", 1450},
		{"first node", "10.42.0.0/24", "10.42.0.0/16", 1450},
		{"other cluster CIDR, jumbo frames", "172.16.9.0/24", "172.16.0.0/12", 8950},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, pod, _ := net.ParseCIDR(tt.podCIDR)
			_, cluster, _ := net.ParseCIDR(tt.cluster)
			path := filepath.Join(t.TempDir(), "net.d", "10-bramble.conflist")
			if err := WriteCNIConfig(path, "/var/lib/bramble/agent/cni/networks", pod, cluster, tt.mtu); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
				t.Fatalf("stat: %v, %v; want mode 0644 (containerd reads it)", fi, err)
			}

			// As containerd's CNI library loads it.
			list, err := libcni.ConfListFromFile(path)
			if err != nil {
				t.Fatalf("libcni cannot load it: %v", err)
			}
			if list.Name != "cbr0" || list.CNIVersion != "1.0.0" {
				t.Errorf("name %q, cniVersion %q", list.Name, list.CNIVersion)
			}
			var types []string
			for _, p := range list.Plugins {
				types = append(types, p.Network.Type)
			}
			if want := []string{"bridge", "portmap"}; !slices.Equal(types, want) {
				t.Fatalf("plugins %q, want %q", types, want)
			}

			var br bridgeConf
			if err := json.Unmarshal(list.Plugins[0].Bytes, &br); err != nil {
				t.Fatal(err)
			}
			if want := (bridgeConf{Type: "bridge", Bridge: "cni0", IsDefaultGateway: true, HairpinMode: true, MTU: tt.mtu}); br != want {
				t.Errorf("bridge %+v, want %+v (ipMasq off: flannel masquerades)", br, want)
			}

			ipam := ipamOf(t, list.Plugins[0].Bytes).IPAM
			if ipam.Ranges[0][0].Subnet != pod.String() {
				t.Errorf("range %s, want the pod CIDR %s", ipam.Ranges[0][0].Subnet, pod)
			}
			if ipam.DataDir != "/var/lib/bramble/agent/cni/networks" {
				t.Errorf("dataDir %q: the pod IP records belong in the data dir (a removed data dir must free its addresses)", ipam.DataDir)
			}
			if len(ipam.Routes) != 1 || ipam.Routes[0].Dst != cluster.String() {
				t.Errorf("routes %+v, want one to %s", ipam.Routes, cluster)
			}

			var pm struct {
				Capabilities map[string]bool `json:"capabilities"`
			}
			if err := json.Unmarshal(list.Plugins[1].Bytes, &pm); err != nil || !pm.Capabilities["portMappings"] {
				t.Errorf("portmap capabilities %v, %v: hostPort (Traefik's 80/443) needs portMappings", pm.Capabilities, err)
			}
		})
	}
}

func TestWriteCNIConfigReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "10-bramble.conflist")
	_, cluster, _ := net.ParseCIDR("10.42.0.0/16")
	for _, pod := range []string{"10.42.1.0/24", "10.42.7.0/24"} {
		_, n, _ := net.ParseCIDR(pod)
		if err := WriteCNIConfig(path, "/d", n, cluster, 1450); err != nil {
			t.Fatal(err)
		}
	}
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := ipamOf(t, list.Plugins[0].Bytes).IPAM.Ranges[0][0].Subnet; got != "10.42.7.0/24" {
		t.Fatalf("after a second write the range is %s, want the new pod CIDR", got)
	}
}

// TestInitNetConf: the network configuration the kube subnet manager reads.
func TestInitNetConf(t *testing.T) {
	_, cluster, _ := net.ParseCIDR("10.42.0.0/16")
	f := New(Config{ClusterCIDR: cluster, Backend: "vxlan", ConfDir: filepath.Join(t.TempDir(), "flannel")}, slog.New(slog.DiscardHandler))
	if err := f.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.netConf())
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Network    string
		EnableIPv4 bool
		Backend    struct{ Type string }
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatalf("net-conf.json: %v\n%s", err, b)
	}
	if conf.Network != "10.42.0.0/16" || !conf.EnableIPv4 || conf.Backend.Type != "vxlan" {
		t.Errorf("net-conf.json = %s", b)
	}
}
