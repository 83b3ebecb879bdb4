// Package nodecreds is a node's credential model: the identities a node
// holds (kubelet client and serving, kube-proxy, flannel), where their files
// live under <data-dir>/agent, the bundle a server issues and a joining node
// stores, and the kubeconfigs made from them. The server (issuing) and the
// join client and node (storing, using) share it without depending on each
// other.
package nodecreds

import (
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

// PEM is one certificate chain and its key.
type PEM struct {
	Cert []byte `json:"cert"`
	Key  []byte `json:"key"`
}

// Bundle is everything a node needs from the server, in memory: what a
// joining node receives.
type Bundle struct {
	ServerCA []byte         `json:"serverCA"`
	ClientCA []byte         `json:"clientCA"`
	Certs    map[string]PEM `json:"certs"` // by identity name (KubeletClient, ...)
}

// Write stores the bundle (all files 0600).
func (c Files) Write(b Bundle) error {
	if err := pki.WriteSecret(c.ServerCA, b.ServerCA); err != nil {
		return err
	}
	if err := pki.WriteSecret(c.ClientCA, b.ClientCA); err != nil {
		return err
	}
	for _, name := range identities {
		p, ok := b.Certs[name]
		if !ok {
			return fmt.Errorf("credentials from the server lack %s", name)
		}
		if err := pki.WriteSecret(c.Key(name), p.Key); err != nil {
			return err
		}
		if err := pki.WriteSecret(c.Cert(name), p.Cert); err != nil {
			return err
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
// certificate present and good for more than pki.RenewBefore, and the
// kubeconfigs present.
func (c Files) Valid(now time.Time) error {
	for _, name := range identities {
		if err := pki.ValidFor(c.Cert(name), pki.RenewBefore, now); err != nil {
			return err
		}
	}
	for _, f := range []string{c.ServerCA, c.ClientCA, c.KubeletKubeconfig, c.KubeProxyKubeconfig, c.FlannelKubeconfig} {
		if _, err := os.Stat(f); err != nil {
			return err
		}
	}
	return nil
}

// Leaves are the certificates a node needs, by identity name.
func Leaves(nodeName string, nodeIP net.IP, flannelUser string) map[string]pki.Leaf {
	return map[string]pki.Leaf{
		KubeletClient:   {CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}, Client: true},
		KubeProxyClient: {CommonName: "system:kube-proxy", Client: true},
		FlannelClient:   {CommonName: flannelUser, Client: true},
		KubeletServing:  {CommonName: nodeName, DNSNames: []string{nodeName, "localhost"}, IPs: []net.IP{nodeIP, net.ParseIP("127.0.0.1")}, Server: true},
	}
}
