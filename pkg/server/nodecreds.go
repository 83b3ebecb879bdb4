package server

import (
	"net"
	"path/filepath"
	"time"

	"github.com/bramble-pi/bramble/pkg/agent"
	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/pki"
)

// EnsureNodeCredentials issues, from the server's own CAs, the credentials for
// the server's own node into dir (<data-dir>/agent/tls and kubeconfigs).
func (cp *ControlPlane) EnsureNodeCredentials(nodeName string, nodeIP net.IP, dir string) (agent.Credentials, error) {
	now := time.Now()
	serverCA, clientCA := cp.creds.serverCA, cp.creds.clientCA
	tls := func(name string) string { return filepath.Join(dir, "tls", name) }
	nc := agent.Credentials{
		ClientCA:            tls("client-ca.crt"),
		ServingCert:         tls("serving-kubelet.crt"),
		ServingKey:          tls("serving-kubelet.key"),
		KubeletKubeconfig:   filepath.Join(dir, "kubelet.kubeconfig"),
		KubeProxyKubeconfig: filepath.Join(dir, "kubeproxy.kubeconfig"),
		FlannelKubeconfig:   filepath.Join(dir, "flannel.kubeconfig"),
	}
	if err := pki.WriteSecret(nc.ClientCA, clientCA.CertPEM); err != nil {
		return agent.Credentials{}, err
	}
	if err := pki.WriteSecret(tls("server-ca.crt"), serverCA.CertPEM); err != nil {
		return agent.Credentials{}, err
	}
	serving := pki.Leaf{CommonName: nodeName, DNSNames: []string{nodeName, "localhost"}, IPs: []net.IP{nodeIP, net.ParseIP("127.0.0.1")}, Server: true}
	if _, err := serverCA.EnsureLeaf(nc.ServingCert, nc.ServingKey, serving, now); err != nil {
		return agent.Credentials{}, err
	}
	clients := map[string]pki.Leaf{
		"client-kubelet":    {CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}, Client: true},
		"client-kube-proxy": {CommonName: "system:kube-proxy", Client: true},
		"client-flannel":    {CommonName: FlannelUser, Client: true},
	}
	for name, leaf := range clients {
		if _, err := clientCA.EnsureLeaf(tls(name+".crt"), tls(name+".key"), leaf, now); err != nil {
			return agent.Credentials{}, err
		}
	}
	for path, client := range map[string]string{nc.KubeletKubeconfig: "client-kubelet", nc.KubeProxyKubeconfig: "client-kube-proxy", nc.FlannelKubeconfig: "client-flannel"} {
		spec := kubeconfig.Spec{Server: cp.cfg.APIServerURL(), CAFile: tls("server-ca.crt"), CertFile: tls(client + ".crt"), KeyFile: tls(client + ".key")}
		if err := kubeconfig.Write(path, 0o600, spec); err != nil {
			return agent.Credentials{}, err
		}
	}
	return nc, nil
}
