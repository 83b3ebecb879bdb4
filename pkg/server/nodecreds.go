package server

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/bramble-pi/bramble/pkg/nodecreds"
	"github.com/bramble-pi/bramble/pkg/pki"
)

// EnsureNodeCredentials issues, from the server's own CAs, the credentials for
// the server's own node into dir (<data-dir>/agent), reusing current ones.
func (cp *ControlPlane) EnsureNodeCredentials(nodeName string, nodeIP net.IP, dir string) (nodecreds.Files, error) {
	cp.ownNode = ownNode{name: nodeName, ip: nodeIP, dir: dir}
	return cp.ensureNodeCredentials(time.Now())
}

// ownNode is the server's own node, whose credentials the server renews
// itself (RenewCertificates).
type ownNode struct {
	name string
	ip   net.IP
	dir  string
}

func (cp *ControlPlane) ensureNodeCredentials(now time.Time) (nodecreds.Files, error) {
	nodeName, nodeIP := cp.ownNode.name, cp.ownNode.ip
	nc := nodecreds.In(cp.ownNode.dir)
	if err := pki.WriteSecret(nc.ClientCA, cp.creds.clientCA.CertPEM); err != nil {
		return nc, err
	}
	if err := pki.WriteSecret(nc.ServerCA, cp.creds.CABundle); err != nil {
		return nc, err
	}
	for name, leaf := range nodecreds.Leaves(nodeName, nodeIP) {
		if _, err := cp.signerFor(leaf).EnsureLeaf(nc.Cert(name), nc.Key(name), leaf, now); err != nil {
			return nc, err
		}
	}
	return nc, nc.WriteKubeconfigs(cp.cfg.APIServerURL())
}

// SignNode signs the certificate requests of a node that joins over the
// network (join.Issuer). What each certificate holds comes from the node's
// name and address, never from the requests, which only carry the keys.
func (cp *ControlPlane) SignNode(nodeName string, nodeIP net.IP, csrs map[string][]byte) (nodecreds.Bundle, error) {
	now := time.Now()
	b := nodecreds.Bundle{ServerCA: cp.creds.CABundle, ClientCA: cp.creds.clientCA.CertPEM, Certs: map[string][]byte{}}
	for name, leaf := range nodecreds.Leaves(nodeName, nodeIP) {
		csr, ok := csrs[name]
		if !ok {
			return b, fmt.Errorf("node %s sent no certificate request for %s", nodeName, name)
		}
		cert, err := cp.signerFor(leaf).SignCSR(csr, leaf, now)
		if err != nil {
			return b, fmt.Errorf("node %s: %w", nodeName, err)
		}
		b.Certs[name] = cert
	}
	return b, nil
}

// Reserved says why a joining node may not hold nodeName or nodeIP in its
// serving certificate (join.Issuer): the apiserver's names and addresses,
// localhost, loopback, the service and pod networks. The kubelet-serving CA
// already keeps a node certificate from passing for the apiserver; this
// keeps node names and addresses from being confusing or misleading too.
func (cp *ControlPlane) Reserved(nodeName string, nodeIP net.IP) error {
	name := strings.ToLower(strings.TrimSuffix(nodeName, "."))
	domain := strings.ToLower(cp.cfg.ClusterDomain)
	switch {
	case name == "localhost" || strings.HasSuffix(name, ".localhost"):
		return fmt.Errorf("node name %q is reserved (localhost)", nodeName)
	case slices.Contains(cp.creds.serving.DNSNames, name) && name != strings.ToLower(cp.cfg.NodeName):
		return fmt.Errorf("node name %q is reserved: it is a name of the apiserver", nodeName)
	case strings.HasSuffix(name, ".svc") || strings.Contains(name, ".svc.") || (domain != "" && strings.HasSuffix(name, "."+domain)):
		return fmt.Errorf("node name %q is reserved: it is a cluster service name", nodeName)
	}
	switch {
	case nodeIP.IsLoopback() || nodeIP.IsUnspecified() || nodeIP.IsMulticast() || nodeIP.IsLinkLocalUnicast():
		return fmt.Errorf("node IP %s is reserved (loopback, unspecified, multicast or link-local)", nodeIP)
	case cp.cfg.ServiceCIDR != nil && cp.cfg.ServiceCIDR.Contains(nodeIP):
		return fmt.Errorf("node IP %s is in the service network %s", nodeIP, cp.cfg.ServiceCIDR)
	case cp.cfg.ClusterCIDR != nil && cp.cfg.ClusterCIDR.Contains(nodeIP):
		return fmt.Errorf("node IP %s is in the pod network %s", nodeIP, cp.cfg.ClusterCIDR)
	}
	for _, ip := range cp.creds.serving.IPs {
		if ip.Equal(nodeIP) {
			return fmt.Errorf("node IP %s is reserved: it is an address of the apiserver", nodeIP)
		}
	}
	return nil
}

// signerFor: kubelet serving certificates come from the kubelet-serving CA
// (only the apiserver trusts it), client certificates from the client CA;
// either signs for the node certificates' lifetime (--node-cert-validity).
func (cp *ControlPlane) signerFor(leaf pki.Leaf) *pki.Authority {
	ca := *cp.creds.clientCA
	if leaf.Server {
		ca = *cp.creds.kubeletServingCA
	}
	ca.Lifetime = cp.cfg.NodeCertLifetime
	return &ca
}
