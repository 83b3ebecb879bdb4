// Package join is how a node joins a bramble server: the server side serves
// the CA (/cacerts, unauthenticated) and, to a node that presents a valid
// token and its node password, the cluster settings and the node's
// certificates, signed for the keys the node generated (no private key
// crosses the wire); the client side checks the server's CA against the
// token's hash before it sends any secret. A joined node re-checks its node
// password at every start (PasswordPath), authenticated by its certificate.
package join

import (
	"github.com/bramble-pi/bramble/pkg/nodecreds"
)

// Paths served on the apiserver's port, in front of the apiserver.
const (
	CACertsPath = "/cacerts"
	NodePath    = "/v1-bramble/node"
	// PasswordPath re-checks a joined node's password: the node proves its
	// name with its kubelet client certificate.
	PasswordPath = "/v1-bramble/node-password"
	// RenewPath renews a joined node's certificates before they expire: the
	// node proves its name with its current kubelet client certificate and
	// its node password, and sends new certificate requests (no token).
	RenewPath = "/v1-bramble/node-certs"
	// BootstrapPath gives a joining server the cluster's shared state
	// (pkg/bootstrap), sealed with the server token; server token only.
	BootstrapPath = "/v1-bramble/server-bootstrap"
	// EtcdMemberPath adds a joining server's etcd member to the cluster as
	// a learner (embedded etcd); server token only.
	EtcdMemberPath = "/v1-bramble/etcd-member"
	// DatastoreHeader says, on BootstrapPath, which datastore the joining
	// server means to use (DatastoreEtcd or DatastoreExternal): the server
	// refuses one that is not the cluster's.
	DatastoreHeader = "Bramble-Datastore"
	// PasswordHeader carries the node password.
	PasswordHeader = "Bramble-Node-Password"
)

// The datastores servers can share.
const (
	DatastoreEtcd     = "etcd"     // embedded etcd (--cluster-init)
	DatastoreExternal = "external" // --datastore-endpoint postgres://, mysql://...
)

// EtcdMemberRequest names a joining server's etcd member.
type EtcdMemberRequest struct {
	Name    string `json:"name"`
	PeerURL string `json:"peerURL"`
}

// EtcdMemberResponse is the initial cluster the new member starts with.
type EtcdMemberResponse struct {
	InitialCluster string `json:"initialCluster"`
}

// ClusterConfig is what a node must agree on with the server.
type ClusterConfig struct {
	ClusterCIDR    string `json:"clusterCIDR"`
	ServiceCIDR    string `json:"serviceCIDR"`
	ClusterDNS     string `json:"clusterDNS"`
	ClusterDomain  string `json:"clusterDomain"`
	FlannelBackend string `json:"flannelBackend"`
	// DisableNetworkPolicy: the nodes do not enforce NetworkPolicies
	// (omitted, and so enforced, by default).
	DisableNetworkPolicy bool `json:"disableNetworkPolicy,omitempty"`
}

// NodeRequest asks for a node's credentials.
type NodeRequest struct {
	NodeName string `json:"nodeName"`
	NodeIP   string `json:"nodeIP"`
	// CSRs are PEM certificate requests by identity name
	// (nodecreds.KubeletClient, ...): they carry the node's public keys.
	CSRs map[string][]byte `json:"csrs"`
}

// NodeResponse carries them, with the cluster settings.
type NodeResponse struct {
	Config ClusterConfig    `json:"config"`
	Certs  nodecreds.Bundle `json:"certs"`
}
