package server

import (
	"fmt"
	"net"
	"time"

	"github.com/bramble-pi/bramble/pkg/nodecreds"
	"github.com/bramble-pi/bramble/pkg/pki"
)

// EnsureNodeCredentials issues, from the server's own CAs, the credentials for
// the server's own node into dir (<data-dir>/agent), reusing current ones.
func (cp *ControlPlane) EnsureNodeCredentials(nodeName string, nodeIP net.IP, dir string) (nodecreds.Files, error) {
	now := time.Now()
	nc := nodecreds.In(dir)
	if err := pki.WriteSecret(nc.ClientCA, cp.creds.clientCA.CertPEM); err != nil {
		return nc, err
	}
	if err := pki.WriteSecret(nc.ServerCA, cp.creds.serverCA.CertPEM); err != nil {
		return nc, err
	}
	for name, leaf := range nodecreds.Leaves(nodeName, nodeIP, FlannelUser) {
		if _, err := cp.signerFor(leaf).EnsureLeaf(nc.Cert(name), nc.Key(name), leaf, now); err != nil {
			return nc, err
		}
	}
	return nc, nc.WriteKubeconfigs(cp.cfg.APIServerURL())
}

// IssueNode signs new credentials for a node that joins over the network.
func (cp *ControlPlane) IssueNode(nodeName string, nodeIP net.IP) (nodecreds.Bundle, error) {
	now := time.Now()
	b := nodecreds.Bundle{ServerCA: cp.creds.serverCA.CertPEM, ClientCA: cp.creds.clientCA.CertPEM, Certs: map[string]nodecreds.PEM{}}
	for name, leaf := range nodecreds.Leaves(nodeName, nodeIP, FlannelUser) {
		cert, key, err := cp.signerFor(leaf).Issue(leaf, now)
		if err != nil {
			return b, fmt.Errorf("node %s: %w", nodeName, err)
		}
		b.Certs[name] = nodecreds.PEM{Cert: cert, Key: key}
	}
	return b, nil
}

// signerFor: serving certificates come from the server CA (the apiserver
// verifies kubelets with it), client certificates from the client CA.
func (cp *ControlPlane) signerFor(leaf pki.Leaf) *pki.Authority {
	if leaf.Server {
		return cp.creds.serverCA
	}
	return cp.creds.clientCA
}
