package server

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/bramble-pi/bramble/pkg/etcd"
	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/metricsserver"
	"github.com/bramble-pi/bramble/pkg/pki"
)

// Credentials are the files the control plane components read.
type Credentials struct {
	ServerCA, ClientCA, RequestHeaderCA string
	// KubeletServingCA signs the kubelets' serving certificates. Only the
	// apiserver trusts it: a node's certificate can never pass for the
	// apiserver's, whatever name it holds.
	KubeletServingCA                    string
	ServingCert, ServingKey             string
	KubeletClientCert, KubeletClientKey string
	ProxyClientCert, ProxyClientKey     string
	// AggregatedAPICA signs the serving certificates of the API servers
	// bramble runs behind the aggregation layer (metrics-server); only the
	// apiserver trusts it (the APIService's caBundle).
	AggregatedAPICA                     string
	MetricsServerCert, MetricsServerKey string
	ServiceAccountKey                   string
	AdminCert, AdminKey                 string
	SchedulerKubeconfig                 string
	ControllerKubeconfig                string
	AdminKubeconfig                     string
	// Embedded etcd: its client URL's serving certificate and the CA
	// clients' certificates chain to (EtcdServer), the apiserver's client
	// certificate (EtcdClient), the peer certificate and CA (EtcdPeer).
	EtcdServer, EtcdClient, EtcdPeer etcd.TLS
	// CABundle is the server CA's PEM, the content served at /cacerts and
	// hashed into the token.
	CABundle []byte

	// The CAs that sign node credentials (EnsureNodeCredentials, SignNode).
	clientCA, kubeletServingCA *pki.Authority
	// serving is the apiserver's serving certificate's names: no node may
	// claim them.
	serving pki.Leaf
}

type clientCert struct {
	file string
	leaf pki.Leaf
}

// EnsureCredentials creates (first start) or reuses and renews the PKI and
// writes the components' kubeconfigs.
func EnsureCredentials(cfg Config, p Paths, now time.Time) (*Credentials, error) {
	if err := os.MkdirAll(p.Root(), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", p.Root(), err)
	}
	serverCA, err := pki.LoadOrCreateCA(p.TLS("server-ca.crt"), p.TLS("server-ca.key"), "bramble-server-ca", now)
	if err != nil {
		return nil, err
	}
	clientCA, err := pki.LoadOrCreateCA(p.TLS("client-ca.crt"), p.TLS("client-ca.key"), "bramble-client-ca", now)
	if err != nil {
		return nil, err
	}
	kubeletCA, err := pki.LoadOrCreateCA(p.TLS("kubelet-serving-ca.crt"), p.TLS("kubelet-serving-ca.key"), "bramble-kubelet-serving-ca", now)
	if err != nil {
		return nil, err
	}
	rhCA, err := pki.LoadOrCreateCA(p.TLS("request-header-ca.crt"), p.TLS("request-header-ca.key"), "bramble-request-header-ca", now)
	if err != nil {
		return nil, err
	}
	aggCA, err := pki.LoadOrCreateCA(p.TLS("aggregated-api-ca.crt"), p.TLS("aggregated-api-ca.key"), "bramble-aggregated-api-ca", now)
	if err != nil {
		return nil, err
	}

	serving, err := servingLeaf(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := serverCA.EnsureLeaf(p.TLS("serving-kube-apiserver.crt"), p.TLS("serving-kube-apiserver.key"), serving, now); err != nil {
		return nil, err
	}
	clients := []clientCert{
		{"client-admin", pki.Leaf{CommonName: "system:admin", Organization: []string{"system:masters"}, Client: true}},
		{"client-kube-apiserver", pki.Leaf{CommonName: "system:kube-apiserver", Organization: []string{"system:masters"}, Client: true}},
		{"client-scheduler", pki.Leaf{CommonName: "system:kube-scheduler", Client: true}},
		{"client-controller", pki.Leaf{CommonName: "system:kube-controller-manager", Client: true}},
	}
	for _, c := range clients {
		if _, err := clientCA.EnsureLeaf(p.TLS(c.file+".crt"), p.TLS(c.file+".key"), c.leaf, now); err != nil {
			return nil, err
		}
	}
	if _, err := rhCA.EnsureLeaf(p.TLS("client-auth-proxy.crt"), p.TLS("client-auth-proxy.key"), pki.Leaf{CommonName: "system:auth-proxy", Client: true}, now); err != nil {
		return nil, err
	}
	metricsLeaf := pki.Leaf{CommonName: metricsserver.ServingName(), Server: true, DNSNames: []string{metricsserver.ServingName()}}
	if _, err := aggCA.EnsureLeaf(p.TLS("serving-metrics-server.crt"), p.TLS("serving-metrics-server.key"), metricsLeaf, now); err != nil {
		return nil, err
	}
	if _, err := pki.EnsureKey(p.TLS("service.key")); err != nil {
		return nil, err
	}
	// etcd's CAs are made by every first start, so that a cluster started
	// on SQLite or joined before has them to share (pkg/bootstrap); the
	// leaves only where etcd runs.
	etcdCA, err := pki.LoadOrCreateCA(p.TLS("etcd/server-ca.crt"), p.TLS("etcd/server-ca.key"), etcd.ServerCAName, now)
	if err != nil {
		return nil, err
	}
	etcdPeerCA, err := pki.LoadOrCreateCA(p.TLS("etcd/peer-ca.crt"), p.TLS("etcd/peer-ca.key"), etcd.PeerCAName, now)
	if err != nil {
		return nil, err
	}
	if cfg.EmbeddedEtcd() {
		hostname, _ := os.Hostname()
		for _, l := range []struct {
			ca   *pki.Authority
			name string
			leaf pki.Leaf
		}{
			{etcdCA, "etcd/server", etcd.ServerLeaf(cfg.NodeName)},
			{etcdCA, "etcd/client", etcd.ClientLeaf()},
			{etcdPeerCA, "etcd/peer", etcd.PeerLeaf(cfg.NodeName, hostname, cfg.AdvertiseAddress)},
		} {
			if _, err := l.ca.EnsureLeaf(p.TLS(l.name+".crt"), p.TLS(l.name+".key"), l.leaf, now); err != nil {
				return nil, err
			}
		}
	}

	cr := &Credentials{
		ServerCA:             serverCA.CertPath,
		ClientCA:             clientCA.CertPath,
		RequestHeaderCA:      rhCA.CertPath,
		KubeletServingCA:     kubeletCA.CertPath,
		ServingCert:          p.TLS("serving-kube-apiserver.crt"),
		ServingKey:           p.TLS("serving-kube-apiserver.key"),
		KubeletClientCert:    p.TLS("client-kube-apiserver.crt"),
		KubeletClientKey:     p.TLS("client-kube-apiserver.key"),
		ProxyClientCert:      p.TLS("client-auth-proxy.crt"),
		ProxyClientKey:       p.TLS("client-auth-proxy.key"),
		AggregatedAPICA:      aggCA.CertPath,
		MetricsServerCert:    p.TLS("serving-metrics-server.crt"),
		MetricsServerKey:     p.TLS("serving-metrics-server.key"),
		ServiceAccountKey:    p.TLS("service.key"),
		AdminCert:            p.TLS("client-admin.crt"),
		AdminKey:             p.TLS("client-admin.key"),
		SchedulerKubeconfig:  p.Cred("scheduler.kubeconfig"),
		ControllerKubeconfig: p.Cred("controller.kubeconfig"),
		AdminKubeconfig:      p.Cred("admin.kubeconfig"),
		EtcdServer:           etcd.TLS{CertFile: p.TLS("etcd/server.crt"), KeyFile: p.TLS("etcd/server.key"), CAFile: etcdCA.CertPath},
		EtcdClient:           etcd.TLS{CertFile: p.TLS("etcd/client.crt"), KeyFile: p.TLS("etcd/client.key"), CAFile: etcdCA.CertPath},
		EtcdPeer:             etcd.TLS{CertFile: p.TLS("etcd/peer.crt"), KeyFile: p.TLS("etcd/peer.key"), CAFile: etcdPeerCA.CertPath},
		CABundle:             serverCA.CertPEM,
		clientCA:             clientCA,
		kubeletServingCA:     kubeletCA,
		serving:              serving,
	}
	local := cfg.APIServerURL()
	for _, k := range []struct{ path, client string }{
		{cr.SchedulerKubeconfig, "client-scheduler"},
		{cr.ControllerKubeconfig, "client-controller"},
		{cr.AdminKubeconfig, "client-admin"},
	} {
		spec := kubeconfig.Spec{Server: local, CAFile: cr.ServerCA, CertFile: p.TLS(k.client + ".crt"), KeyFile: p.TLS(k.client + ".key")}
		if err := kubeconfig.Write(k.path, 0o600, spec); err != nil {
			return nil, err
		}
	}
	return cr, nil
}

// WriteAdminKubeconfig writes the portable admin kubeconfig for users.
func (cr *Credentials) WriteAdminKubeconfig(cfg Config) error {
	if cfg.KubeconfigPath == "" {
		return nil
	}
	spec := kubeconfig.Spec{Server: cfg.APIServerURL(), CAFile: cr.ServerCA, CertFile: cr.AdminCert, KeyFile: cr.AdminKey, Embed: true}
	return kubeconfig.Write(cfg.KubeconfigPath, cfg.KubeconfigMode, spec)
}

func servingLeaf(cfg Config) (pki.Leaf, error) {
	svcIP, err := ServiceIP(cfg.ServiceCIDR)
	if err != nil {
		return pki.Leaf{}, err
	}
	leaf := pki.Leaf{
		CommonName: "kube-apiserver",
		Server:     true,
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc." + cfg.ClusterDomain},
		IPs: []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback, svcIP},
	}
	if cfg.NodeName != "" {
		leaf.DNSNames = append(leaf.DNSNames, cfg.NodeName)
	}
	if cfg.AdvertiseAddress != nil {
		leaf.IPs = append(leaf.IPs, cfg.AdvertiseAddress)
	}
	for _, san := range cfg.TLSSANs {
		if ip := net.ParseIP(san); ip != nil {
			leaf.IPs = append(leaf.IPs, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, san)
		}
	}
	return leaf, nil
}
