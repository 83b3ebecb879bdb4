package etcd

import (
	"net"
	"slices"

	"github.com/bramble-pi/bramble/pkg/pki"
)

// The certificate authorities of etcd (shared by every server of a cluster,
// pkg/bootstrap): the server CA signs the client URL's serving certificate
// and the apiserver's client certificate; the peer CA signs the members'
// peer certificates. Nothing else is signed by them, so no Kubernetes
// identity reaches etcd, and no etcd identity reaches the apiserver.
const (
	ServerCAName = "bramble-etcd-server-ca"
	PeerCAName   = "bramble-etcd-peer-ca"
)

// ServerLeaf is the client URL's serving certificate: loopback only (the
// client URL listens there), usable as a client too (etcd's own health
// checks dial it).
func ServerLeaf(nodeName string) pki.Leaf {
	return pki.Leaf{
		CommonName: "etcd-server-" + nodeName, Server: true, Client: true,
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
	}
}

// ClientLeaf is the apiserver's (and bramble's tools') client certificate.
func ClientLeaf() pki.Leaf {
	return pki.Leaf{CommonName: "etcd-client", Client: true}
}

// PeerLeaf is a member's peer certificate: it serves the peer URL and
// dials the other members, who check the name: the node's address, its
// node name and its host name.
func PeerLeaf(nodeName, hostname string, nodeIP net.IP) pki.Leaf {
	names := []string{"localhost"}
	for _, n := range []string{nodeName, hostname} {
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	ips := []net.IP{net.ParseIP("127.0.0.1")}
	if nodeIP != nil && !nodeIP.IsLoopback() {
		ips = append(ips, nodeIP)
	}
	return pki.Leaf{CommonName: "etcd-peer-" + nodeName, Server: true, Client: true, DNSNames: names, IPs: ips}
}
