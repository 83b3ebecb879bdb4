// Package layout is bramble's on-disk layout, in one place: the data dir
// (/var/lib/bramble by default), the runtime dir (/run/bramble) and the
// config dir (/etc/bramble), and the rule every command and the release
// launcher use to find the data dir and the admin kubeconfig: flag >
// BRAMBLE_* environment variable > config file > default.
//
//	<data-dir>/server/    tls/ cred/{*.kubeconfig,encryption-config.yaml} db/{state.db,snapshots/} token agent-token manifests/ etc/ kine.sock
//	<data-dir>/agent/     tls/ *.kubeconfig join.json node-password images/ images.state.json
//	                      containerd/ etc/{containerd,cni/net.d,flannel,kubelet.yaml}
//	<data-dir>/data/<hash>/bin   helper binaries (and a release's bramble)
//	/run/bramble/         containerd/ (state, socket) flannel/ (subnet.env) mnt-ns
//	/etc/bramble/         config.yaml bramble.yaml (admin kubeconfig)
package layout

import "path/filepath"

// Defaults.
const (
	DefaultDataDir    = "/var/lib/bramble"
	RunDir            = "/run/bramble"
	ConfigDir         = "/etc/bramble"
	DefaultConfigFile = ConfigDir + "/config.yaml"
	DefaultKubeconfig = ConfigDir + "/bramble.yaml"
	KubeletRootDir    = "/var/lib/kubelet"
	// ContainerdSocket is the node's containerd socket.
	ContainerdSocket = RunDir + "/containerd/containerd.sock"
)

// Dirs is the layout under one data dir.
type Dirs struct{ DataDir string }

// New returns the layout of a data dir.
func New(dataDir string) Dirs { return Dirs{DataDir: dataDir} }

// Server is <data-dir>/server: the control plane's state.
func (d Dirs) Server() string { return filepath.Join(d.DataDir, "server") }

// Agent is <data-dir>/agent: the node's state.
func (d Dirs) Agent() string { return filepath.Join(d.DataDir, "agent") }

// Storage is <data-dir>/storage: the default home of the node's local-path
// volumes.
func (d Dirs) Storage() string { return filepath.Join(d.DataDir, "storage") }

// Data is <data-dir>/data: unpacked binaries, one directory per content hash.
func (d Dirs) Data() string { return filepath.Join(d.DataDir, "data") }

// Token is the server token file.
func (d Dirs) Token() string { return filepath.Join(d.Server(), "token") }

// AgentToken is the agent token file (when --agent-token was given).
func (d Dirs) AgentToken() string { return filepath.Join(d.Server(), "agent-token") }

// Manifests is where bundled and user manifests live.
func (d Dirs) Manifests() string { return filepath.Join(d.Server(), "manifests") }

// Images is where image archives a node imports at start live.
func (d Dirs) Images() string { return filepath.Join(d.Agent(), "images") }

// ImagesState remembers what was imported from Images.
func (d Dirs) ImagesState() string { return filepath.Join(d.Agent(), "images.state.json") }

// AgentEtc holds the node components' generated configuration.
func (d Dirs) AgentEtc() string { return filepath.Join(d.Agent(), "etc") }

// ContainerdRoot is containerd's persistent root.
func (d Dirs) ContainerdRoot() string { return filepath.Join(d.Agent(), "containerd") }

// PodIPs is where the host-local IPAM plugin records the pod IPs it handed
// out. It lives in the data dir, not in the plugin's default
// /var/lib/cni/networks, so that removing a data dir (a reset, a test)
// also frees addresses whose sandboxes went with it.
func (d Dirs) PodIPs() string { return filepath.Join(d.Agent(), "cni", "networks") }

// ServerTLS is a file in the server's certificate directory.
func (d Dirs) ServerTLS(name string) string { return filepath.Join(d.Server(), "tls", name) }

// ServerCred is a file in the server's credentials (component kubeconfig)
// directory; admin.kubeconfig is the local admin's.
func (d Dirs) ServerCred(name string) string { return filepath.Join(d.Server(), "cred", name) }

// EncryptionConfig is the apiserver's EncryptionConfiguration: the keys that
// encrypt Secrets in the datastore (mode 0600).
func (d Dirs) EncryptionConfig() string { return d.ServerCred("encryption-config.yaml") }

// DB holds the SQLite database, state.db.
func (d Dirs) DB() string { return filepath.Join(d.Server(), "db") }

// Etcd is the embedded etcd member's data dir (--cluster-init and the
// servers that join it).
func (d Dirs) Etcd() string { return filepath.Join(d.DB(), "etcd") }

// DBSnapshots is where `bramble db snapshot` and the server's schedule
// write SQLite snapshots by default.
func (d Dirs) DBSnapshots() string { return filepath.Join(d.DB(), "snapshots") }

// KineSocket is where kine serves the etcd API.
func (d Dirs) KineSocket() string { return filepath.Join(d.Server(), "kine.sock") }

// ContainerdConfig holds containerd's generated config.toml (and the
// user's config.toml.tmpl).
func (d Dirs) ContainerdConfig() string { return filepath.Join(d.AgentEtc(), "containerd") }
