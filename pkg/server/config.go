// Package server runs bramble's control plane: the datastore, kube-apiserver,
// kube-scheduler and kube-controller-manager, in one process, under one
// supervisor.
package server

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/bramble-pi/bramble/pkg/layout"
)

// Config is the control plane's configuration, built by the CLI.
type Config struct {
	DataDir           string
	BindAddress       net.IP
	HTTPSPort         int
	AdvertiseAddress  net.IP
	TLSSANs           []string
	ClusterCIDR       *net.IPNet
	ServiceCIDR       *net.IPNet
	ClusterDNS        net.IP
	ClusterDomain     string
	NodeName          string
	Token             string
	AgentToken        string // optional: joins agents only
	FlannelBackend    string
	NetworkPolicy     bool // every node enforces NetworkPolicies (sent to agents at join)
	DatastoreEndpoint string
	// ClusterInit starts a new cluster on embedded etcd (--cluster-init)
	// instead of SQLite.
	ClusterInit bool
	// JoinServer is a running server of the cluster this server joins
	// (--server; its bootstrap state comes from there at the first start).
	JoinServer     string
	KubeconfigPath string
	KubeconfigMode os.FileMode
	Disable        []string // bundled add-ons to leave out
	// The user's extra flags (name=value) for the control-plane components:
	// --kube-apiserver-arg, --kube-scheduler-arg, --kube-controller-manager-arg.
	APIServerArgs, SchedulerArgs, ControllerArgs []string
	// AuditLog is the apiserver's audit log file; "" for none.
	AuditLog string
	// SecretsEncryption encrypts Secrets in the datastore (secretsenc).
	SecretsEncryption bool
	// AllowEmptyDatastore starts a cluster whose SQLite file is missing or
	// empty (lost) on an empty datastore instead of refusing.
	AllowEmptyDatastore bool
	// Snapshots is the schedule of the SQLite datastore's snapshots.
	Snapshots SnapshotSchedule
	// NodeCertLifetime is the validity of the certificates signed for
	// nodes (0: pki.LeafLifetime).
	NodeCertLifetime time.Duration
}

// Paths is the server's part of the on-disk layout (pkg/layout).
type Paths struct{ d layout.Dirs }

// NewPaths returns the layout for a data dir.
func NewPaths(dataDir string) Paths { return Paths{d: layout.New(dataDir)} }

// Root is <data-dir>/server.
func (p Paths) Root() string { return p.d.Server() }

// TLS is a file in the certificate directory.
func (p Paths) TLS(name string) string { return p.d.ServerTLS(name) }

// Cred is a file in the credentials (component kubeconfig) directory.
func (p Paths) Cred(name string) string { return p.d.ServerCred(name) }

// Token is the server token file.
func (p Paths) Token() string { return p.d.Token() }

// AgentToken is the agent token file (when --agent-token was given).
func (p Paths) AgentToken() string { return p.d.AgentToken() }

// DBDir holds the SQLite database.
func (p Paths) DBDir() string { return p.d.DB() }

// EncryptionConfig is the apiserver's EncryptionConfiguration (the keys).
func (p Paths) EncryptionConfig() string { return p.d.EncryptionConfig() }

// EtcdDir is the embedded etcd member's data dir.
func (p Paths) EtcdDir() string { return p.d.Etcd() }

// KineSocket is where kine serves the etcd API.
func (p Paths) KineSocket() string { return p.d.KineSocket() }

// ServiceIP is the first address of the service range: the kubernetes Service.
func ServiceIP(cidr *net.IPNet) (net.IP, error) { return NthIP(cidr, 1) }

// NthIP is the n-th address of a network (n < 256), which must lie inside it.
func NthIP(cidr *net.IPNet, n byte) (net.IP, error) {
	ip := cidr.IP.To4()
	if ip == nil {
		ip = cidr.IP.To16()
	}
	out := make(net.IP, len(ip))
	copy(out, ip)
	out[len(out)-1] += n
	if !cidr.Contains(out) {
		return nil, fmt.Errorf("network %s has no address number %d", cidr, n)
	}
	return out, nil
}

// APIServerURL is the loopback URL components use.
func (c Config) APIServerURL() string {
	return fmt.Sprintf("https://127.0.0.1:%d", c.HTTPSPort)
}
