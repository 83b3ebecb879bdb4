// Package nodecreds is a node's credential model: the identities a node
// holds (kubelet client and serving, kube-proxy, flannel), where their files
// live under <data-dir>/agent, the bundle a server issues and a joining node
// stores, and the kubeconfigs made from them. The server (issuing) and the
// join client and node (storing, using) share it without depending on each
// other.
package nodecreds

import (
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/pki"
)

// Files are the node's certificate and kubeconfig files, prepared by
// the server (for its own node) or fetched when joining.
type Files struct {
	ClientCA            string
	ServerCA            string
	ServingCert         string
	ServingKey          string
	KubeletKubeconfig   string
	KubeProxyKubeconfig string
	FlannelKubeconfig   string
	dir                 string
}

// Client identities a node needs. The certificate of each is
// <dir>/tls/<name>.crt and its key <name>.key.
const (
	KubeletClient   = "client-kubelet"
	KubeProxyClient = "client-kube-proxy"
	FlannelClient   = "client-flannel"
	KubeletServing  = "serving-kubelet"
)

// identities are the certificates every node holds (Leaves' keys).
var identities = []string{KubeletClient, KubeProxyClient, FlannelClient, KubeletServing}

// In is the layout of a node's credentials under dir
// (<data-dir>/agent).
func In(dir string) Files {
	return Files{
		ClientCA:            filepath.Join(dir, "tls", "client-ca.crt"),
		ServerCA:            filepath.Join(dir, "tls", "server-ca.crt"),
		ServingCert:         filepath.Join(dir, "tls", KubeletServing+".crt"),
		ServingKey:          filepath.Join(dir, "tls", KubeletServing+".key"),
		KubeletKubeconfig:   filepath.Join(dir, "kubelet.kubeconfig"),
		KubeProxyKubeconfig: filepath.Join(dir, "kubeproxy.kubeconfig"),
		FlannelKubeconfig:   filepath.Join(dir, "flannel.kubeconfig"),
		dir:                 dir,
	}
}

// Cert and Key are the files of a named identity.
func (c Files) Cert(name string) string { return filepath.Join(c.dir, "tls", name+".crt") }

// Key is the private key file of a named identity.
func (c Files) Key(name string) string { return filepath.Join(c.dir, "tls", name+".key") }

// Bundle is what a joining node receives from the server: the CAs it
// trusts and, by identity name (KubeletClient, ...), the certificate chains
// the server signed for the keys the node generated. No private key is in it:
// a node's keys never leave the node.
type Bundle struct {
	ServerCA []byte            `json:"serverCA"`
	ClientCA []byte            `json:"clientCA"`
	Certs    map[string][]byte `json:"certs"`
}

// CSRs returns a certificate signing request for each identity, creating the
// node's private keys (0600) on first use and reusing them afterwards.
func (c Files) CSRs(nodeName string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, name := range identities {
		csr, err := pki.CSR(c.Key(name), nodeName+"/"+name)
		if err != nil {
			return nil, fmt.Errorf("node key %s: %w", name, err)
		}
		out[name] = csr
	}
	return out, nil
}

// Write stores the bundle (all files 0600) after checking that each
// certificate holds the public key of the node's own private key.
func (c Files) Write(b Bundle) error {
	if err := pki.WriteSecret(c.ServerCA, b.ServerCA); err != nil {
		return err
	}
	if err := pki.WriteSecret(c.ClientCA, b.ClientCA); err != nil {
		return err
	}
	for _, name := range identities {
		cert, ok := b.Certs[name]
		if !ok {
			return fmt.Errorf("credentials from the server lack %s", name)
		}
		tmp := c.Cert(name) + ".new"
		if err := pki.WriteSecret(tmp, cert); err != nil {
			return err
		}
		if err := pki.MatchesKey(tmp, c.Key(name)); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("credentials from the server: %w", err)
		}
		if err := os.Rename(tmp, c.Cert(name)); err != nil {
			return fmt.Errorf("store %s: %w", name, err)
		}
	}
	return nil
}

// WriteKubeconfigs points the kubelet, kube-proxy and flannel at server.
func (c Files) WriteKubeconfigs(server string) error {
	for path, client := range map[string]string{c.KubeletKubeconfig: KubeletClient, c.KubeProxyKubeconfig: KubeProxyClient, c.FlannelKubeconfig: FlannelClient} {
		spec := kubeconfig.Spec{Server: server, CAFile: c.ServerCA, CertFile: c.Cert(client), KeyFile: c.Key(client)}
		if err := kubeconfig.Write(path, 0o600, spec); err != nil {
			return err
		}
	}
	return nil
}

// Valid says whether the stored credentials can be used as they are: every
// certificate present, not due for renewal (pki.NeedsRenewal), and the
// kubeconfigs present.
func (c Files) Valid(now time.Time) error {
	err := c.checkCerts(func(cert *x509.Certificate) string {
		if pki.NeedsRenewal(cert, now) {
			return "expires at " + cert.NotAfter.Format(time.RFC3339) + ": renew it"
		}
		return ""
	})
	if err != nil {
		return err
	}
	for _, f := range []string{c.ServerCA, c.ClientCA, c.KubeletKubeconfig, c.KubeProxyKubeconfig, c.FlannelKubeconfig} {
		if _, err := os.Stat(f); err != nil {
			return err
		}
	}
	return nil
}

// FlannelGroup is the group of every node's flannel identity. Its
// ClusterRole lets flannel watch all Nodes and patch Node status; an
// admission policy limits each identity to its own Node (pkg/server).
const FlannelGroup = "bramble:flannel"

// FlannelUser is the flannel identity of one node.
func FlannelUser(nodeName string) string { return FlannelGroup + ":" + nodeName }

// Usable says whether the stored credentials can still authenticate the
// node, due for renewal or not: every certificate present, matching its key
// and not expired.
func (c Files) Usable(now time.Time) error {
	return c.checkCerts(func(cert *x509.Certificate) string {
		if now.After(cert.NotAfter) {
			return "expired at " + cert.NotAfter.Format(time.RFC3339)
		}
		return ""
	})
}

// checkCerts reads every identity's certificate, refuses it when bad gives a
// reason, and checks that it holds the public key of the node's own key.
func (c Files) checkCerts(bad func(*x509.Certificate) string) error {
	for _, name := range identities {
		cert, err := pki.ReadCert(c.Cert(name))
		if err != nil {
			return err
		}
		if why := bad(cert); why != "" {
			return fmt.Errorf("%s %s", c.Cert(name), why)
		}
		if err := pki.MatchesKey(c.Cert(name), c.Key(name)); err != nil {
			return err
		}
	}
	return nil
}

// Expiry is when the first of the node's certificates expires (zero when
// one cannot be read).
func (c Files) Expiry() time.Time {
	var first time.Time
	for _, name := range identities {
		cert, err := pki.ReadCert(c.Cert(name))
		if err != nil {
			return time.Time{}
		}
		if first.IsZero() || cert.NotAfter.Before(first) {
			first = cert.NotAfter
		}
	}
	return first
}

// ShortestLifetime is the shortest validity among the node's certificates
// (pki.LeafLifetime when none can be read).
func (c Files) ShortestLifetime() time.Duration {
	shortest := pki.LeafLifetime
	for _, name := range identities {
		if cert, err := pki.ReadCert(c.Cert(name)); err == nil {
			shortest = min(shortest, cert.NotAfter.Sub(cert.NotBefore))
		}
	}
	return shortest
}

// RenewCheckInterval is how often a running node looks at its certificates
// for renewal: a tenth of the shortest lifetime among them, between 5 s and
// an hour.
func (c Files) RenewCheckInterval() time.Duration {
	return min(max(c.ShortestLifetime()/10, 5*time.Second), time.Hour)
}

// Leaves are the certificates a node needs, by identity name.
func Leaves(nodeName string, nodeIP net.IP) map[string]pki.Leaf {
	return map[string]pki.Leaf{
		KubeletClient:   {CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}, Client: true},
		KubeProxyClient: {CommonName: "system:kube-proxy", Client: true},
		FlannelClient:   {CommonName: FlannelUser(nodeName), Organization: []string{FlannelGroup}, Client: true},
		KubeletServing:  {CommonName: nodeName, DNSNames: []string{nodeName, "localhost"}, IPs: []net.IP{nodeIP, net.ParseIP("127.0.0.1")}, Server: true},
	}
}
