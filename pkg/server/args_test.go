package server

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	auditpolicy "k8s.io/apiserver/pkg/audit/policy"
	apioptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	schedoptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

// testControlPlane is a prepared control plane without anything on disk:
// the argument generators read only its configuration and file names.
func testControlPlane(t *testing.T, change func(*Config)) *ControlPlane {
	t.Helper()
	_, cluster, _ := net.ParseCIDR("10.42.0.0/16")
	_, service, _ := net.ParseCIDR("10.43.0.0/16")
	cfg := Config{
		DataDir:          t.TempDir(),
		BindAddress:      net.ParseIP("0.0.0.0"),
		HTTPSPort:        6443,
		AdvertiseAddress: net.ParseIP("192.168.1.10"),
		ClusterCIDR:      cluster,
		ServiceCIDR:      service,
		ClusterDNS:       net.ParseIP("10.43.0.10"),
		ClusterDomain:    "cluster.local",
		NodeName:         "pi1",
		FlannelBackend:   "vxlan",
	}
	if change != nil {
		change(&cfg)
	}
	p := NewPaths(cfg.DataDir)
	creds := &Credentials{
		ServerCA: p.TLS("server-ca.crt"), ClientCA: p.TLS("client-ca.crt"), RequestHeaderCA: p.TLS("request-header-ca.crt"),
		KubeletServingCA: p.TLS("kubelet-serving-ca.crt"),
		ServingCert:      p.TLS("serving-kube-apiserver.crt"), ServingKey: p.TLS("serving-kube-apiserver.key"),
		KubeletClientCert: p.TLS("client-kube-apiserver.crt"), KubeletClientKey: p.TLS("client-kube-apiserver.key"),
		ProxyClientCert: p.TLS("client-auth-proxy.crt"), ProxyClientKey: p.TLS("client-auth-proxy.key"),
		ServiceAccountKey:   p.TLS("service.key"),
		SchedulerKubeconfig: p.Cred("scheduler.kubeconfig"), ControllerKubeconfig: p.Cred("controller.kubeconfig"),
	}
	return &ControlPlane{cfg: cfg, paths: p, creds: creds}
}

// flagValues maps each --name to its values, in order.
func flagValues(t *testing.T, args []string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, a := range args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok || !strings.HasPrefix(a, "--") {
			t.Fatalf("argument %q is not --name=value", a)
		}
		out[name] = append(out[name], value)
	}
	return out
}

// checkFlags fails for every flag whose values are not the wanted ones.
func checkFlags(t *testing.T, args []string, want map[string][]string) {
	t.Helper()
	got := flagValues(t, args)
	for name, values := range want {
		if !slices.Equal(got[name], values) {
			t.Errorf("--%s = %q, want %q", name, got[name], values)
		}
	}
}

func TestAPIServerArgs(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		etcd   []string
		want   map[string][]string
	}{
		{
			name: "defaults, kine on a unix socket",
			etcd: []string{"unix:///var/lib/bramble/server/kine.sock"},
			want: map[string][]string{
				"advertise-address":           {"192.168.1.10"},
				"bind-address":                {"0.0.0.0"},
				"secure-port":                 {"6443"},
				"service-cluster-ip-range":    {"10.43.0.0/16"},
				"service-account-issuer":      {"https://kubernetes.default.svc.cluster.local"},
				"etcd-servers":                {"unix:///var/lib/bramble/server/kine.sock"},
				"authorization-mode":          {"Node,RBAC"},
				"enable-admission-plugins":    {"NodeRestriction"},
				"tls-min-version":             {"VersionTLS12"},
				"tls-cipher-suites":           {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"},
				"profiling":                   {"false"},
				"requestheader-allowed-names": {"system:auth-proxy"},
				"endpoint-reconciler-type":    {"master-count"},
				"apiserver-count":             {"1"},
			},
		},
		{
			name:   "a shared datastore: several servers keep the kubernetes Service's endpoints with leases",
			change: func(c *Config) { c.DatastoreEndpoint = "postgres://bramble:secret@db:5432/kine" },
			etcd:   []string{"unix:///var/lib/bramble/server/kine.sock"},
			want: map[string][]string{
				"endpoint-reconciler-type": {"lease"},
				"apiserver-count":          nil,
			},
		},
		{
			name: "other port, domain and service range; several etcd endpoints",
			change: func(c *Config) {
				c.HTTPSPort = 7443
				c.ClusterDomain = "bramble.lan"
				_, c.ServiceCIDR, _ = net.ParseCIDR("172.20.0.0/16")
				c.BindAddress = net.ParseIP("192.168.1.10")
			},
			etcd: []string{"https://etcd1:2379", "https://etcd2:2379"},
			want: map[string][]string{
				"secure-port":              {"7443"},
				"bind-address":             {"192.168.1.10"},
				"service-cluster-ip-range": {"172.20.0.0/16"},
				"service-account-issuer":   {"https://kubernetes.default.svc.bramble.lan"},
				"etcd-servers":             {"https://etcd1:2379", "https://etcd2:2379"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := testControlPlane(t, tt.change)
			args := cp.apiServerArgs(tt.etcd)
			checkFlags(t, args, tt.want)
			// kubelets are verified with their own CA, not the server CA.
			if got := flagValues(t, args)["kubelet-certificate-authority"]; len(got) != 1 || got[0] != cp.creds.KubeletServingCA {
				t.Errorf("--kubelet-certificate-authority=%v, want %s", got, cp.creds.KubeletServingCA)
			}
			// Every file the apiserver reads lives in the data dir.
			for name, values := range flagValues(t, args) {
				if strings.HasSuffix(name, "-file") || name == "authentication-config" || name == "allow-metric-labels-manifest" {
					if !strings.HasPrefix(values[0], filepath.Join(cp.cfg.DataDir, "server")+"/") {
						t.Errorf("--%s=%s is outside the server's data dir", name, values[0])
					}
				}
			}
			// kube-apiserver itself accepts them.
			if err := parseFlags("kube-apiserver", apioptions.NewServerRunOptions().Flags(), args); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestControllerManagerArgs(t *testing.T) {
	cp := testControlPlane(t, func(c *Config) { _, c.ClusterCIDR, _ = net.ParseCIDR("10.100.0.0/16") })
	args := cp.controllerManagerArgs()
	tls := filepath.Join(cp.cfg.DataDir, "server", "tls")
	checkFlags(t, args, map[string][]string{
		"allocate-node-cidrs":                            {"false"}, // bramble's node-ipam component allocates
		"cluster-cidr":                                   {"10.100.0.0/16"},
		"service-cluster-ip-range":                       {"10.43.0.0/16"},
		"leader-elect":                                   {"false"},
		"secure-port":                                    {"0"},
		"use-service-account-credentials":                {"true"},
		"root-ca-file":                                   {filepath.Join(tls, "server-ca.crt")},
		"cluster-signing-kubelet-client-cert-file":       {filepath.Join(tls, "client-ca.crt")},
		"cluster-signing-kubelet-client-key-file":        {filepath.Join(tls, "client-ca.key")},
		"cluster-signing-kubelet-serving-key-file":       {filepath.Join(tls, "kubelet-serving-ca.key")},
		"cluster-signing-kube-apiserver-client-key-file": {filepath.Join(tls, "client-ca.key")},
		"cluster-signing-legacy-unknown-cert-file":       {filepath.Join(tls, "kubelet-serving-ca.crt")},
		"service-account-private-key-file":               {filepath.Join(tls, "service.key")},
	})
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		t.Fatal(err)
	}
	sets := s.Flags(kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases())
	if err := parseFlags("kube-controller-manager", sets, args); err != nil {
		t.Fatal(err)
	}
}

func TestSchedulerArgs(t *testing.T) {
	cp := testControlPlane(t, nil)
	args := cp.schedulerArgs()
	checkFlags(t, args, map[string][]string{
		"kubeconfig":   {cp.creds.SchedulerKubeconfig},
		"leader-elect": {"false"},
		"secure-port":  {"0"},
	})
	if err := parseFlags("kube-scheduler", *schedoptions.NewOptions().Flags, args); err != nil {
		t.Fatal(err)
	}
}

// With a shared datastore several servers may run: the scheduler and the
// controller-manager elect a leader; one server on SQLite does not.
func TestLeaderElectionOnlyWhenShared(t *testing.T) {
	for endpoint, want := range map[string]string{"": "false", "sqlite:///d/state.db": "false", "postgres://db/kine": "true", "mysql://u:p@tcp(db)/kine": "true"} {
		cp := testControlPlane(t, func(c *Config) { c.DatastoreEndpoint = endpoint })
		checkFlags(t, cp.schedulerArgs(), map[string][]string{"leader-elect": {want}})
		checkFlags(t, cp.controllerManagerArgs(), map[string][]string{"leader-elect": {want}})
	}
}

func TestParseFlagsNamesTheComponent(t *testing.T) {
	err := parseFlags("kube-scheduler", *schedoptions.NewOptions().Flags, []string{"--no-such-flag=1"})
	if err == nil || !strings.Contains(err.Error(), "kube-scheduler arguments") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("err = %v", err)
	}
}

func TestKeyOf(t *testing.T) {
	if got := keyOf("/d/server/tls/client-ca.crt"); got != "/d/server/tls/client-ca.key" {
		t.Errorf("keyOf = %q", got)
	}
}

func TestNthIP(t *testing.T) {
	tests := []struct {
		cidr    string
		n       byte
		want    string
		wantErr bool
	}{
		{"10.43.0.0/16", 1, "10.43.0.1", false},
		{"10.43.0.0/16", 10, "10.43.0.10", false},
		{"192.168.7.0/24", 254, "192.168.7.254", false},
		{"10.43.0.0/29", 10, "", true},
		{"fd00:43::/108", 10, "fd00:43::a", false},
	}
	for _, tt := range tests {
		_, n, _ := net.ParseCIDR(tt.cidr)
		got, err := NthIP(n, tt.n)
		if (err != nil) != tt.wantErr || (err == nil && got.String() != tt.want) {
			t.Errorf("NthIP(%s, %d) = %v, %v; want %s (error %v)", tt.cidr, tt.n, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestServingLeaf(t *testing.T) {
	cp := testControlPlane(t, func(c *Config) { c.TLSSANs = []string{"pi1.local", "192.168.1.99", "fd00::9"} })
	leaf, err := servingLeaf(cp.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"localhost", "kubernetes.default.svc.cluster.local", "pi1", "pi1.local"} {
		if !slices.Contains(leaf.DNSNames, name) {
			t.Errorf("DNS names %q lack %s", leaf.DNSNames, name)
		}
	}
	var ips []string
	for _, ip := range leaf.IPs {
		ips = append(ips, ip.String())
	}
	for _, ip := range []string{"127.0.0.1", "10.43.0.1", "192.168.1.10", "192.168.1.99", "fd00::9"} {
		if !slices.Contains(ips, ip) {
			t.Errorf("IPs %q lack %s", ips, ip)
		}
	}
	if slices.Contains(leaf.DNSNames, "192.168.1.99") {
		t.Error("an IP SAN went into the DNS names")
	}

	_, tiny, _ := net.ParseCIDR("10.43.0.0/32")
	cp.cfg.ServiceCIDR = tiny
	if _, err := servingLeaf(cp.cfg); err == nil {
		t.Error("a service range without a first address gave no error")
	}
}

// A user's flag replaces bramble's value of it (never a second value), a
// new one is added, and each component still accepts the result.
func TestPassThroughArgs(t *testing.T) {
	cp := testControlPlane(t, func(c *Config) {
		c.APIServerArgs = []string{"service-node-port-range=20000-22767", "--enable-admission-plugins=NodeRestriction,PodSecurity", "event-ttl=30m", "etcd-servers=https://a:2379", "etcd-servers=https://b:2379"}
		c.SchedulerArgs = []string{"leader-elect=true"}
		c.ControllerArgs = []string{"terminated-pod-gc-threshold=10", "--controllers=*"}
	})
	api := cp.apiServerArgs([]string{"unix:///kine.sock"})
	checkFlags(t, api, map[string][]string{
		"service-node-port-range":  {"20000-22767"},
		"enable-admission-plugins": {"NodeRestriction,PodSecurity"},
		"event-ttl":                {"30m"},
		"etcd-servers":             {"https://a:2379", "https://b:2379"},
		"secure-port":              {"6443"},
	})
	checkFlags(t, cp.schedulerArgs(), map[string][]string{"leader-elect": {"true"}, "secure-port": {"0"}})
	checkFlags(t, cp.controllerManagerArgs(), map[string][]string{"terminated-pod-gc-threshold": {"10"}, "controllers": {"*"}})
	if err := cp.checkArgs(); err != nil {
		t.Fatal(err)
	}
}

func TestPassThroughErrors(t *testing.T) {
	tests := []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.APIServerArgs = []string{"no-such-flag=1"} }, `--kube-apiserver-arg "no-such-flag=1": kube-apiserver has no flag --no-such-flag`},
		{func(c *Config) { c.SchedulerArgs = []string{"--bogus"} }, `--kube-scheduler-arg "--bogus": kube-scheduler has no flag --bogus`},
		{func(c *Config) { c.ControllerArgs = []string{"node-monitor-period=soon"} }, `--kube-controller-manager-arg: kube-controller-manager arguments: invalid argument "soon"`},
		{func(c *Config) { c.APIServerArgs = []string{"=1"} }, `--kube-apiserver-arg "=1": no flag name`},
	}
	for _, tt := range tests {
		cp := testControlPlane(t, tt.change)
		// As in Prepare: before any certificate exists.
		cp.creds = &Credentials{}
		err := cp.checkArgs()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("err = %v, want one with %q", err, tt.want)
		}
	}
}

func TestAuditAndEncryptionArgs(t *testing.T) {
	cp := testControlPlane(t, func(c *Config) {
		c.AuditLog = "/var/log/bramble/audit.log"
		c.APIServerArgs = []string{"audit-log-maxsize=50"}
	})
	cp.encryption = true
	args := cp.apiServerArgs(nil)
	checkFlags(t, args, map[string][]string{
		"audit-log-path":                              {"/var/log/bramble/audit.log"},
		"audit-policy-file":                           {auditPolicyPath(cp.paths)},
		"audit-log-maxsize":                           {"50"}, // the user's
		"audit-log-maxage":                            {"7"},
		"encryption-provider-config":                  {cp.paths.EncryptionConfig()},
		"encryption-provider-config-automatic-reload": {"true"},
	})
	if err := parseFlags("kube-apiserver", apioptions.NewServerRunOptions().Flags(), args); err != nil {
		t.Fatal(err)
	}
	// Off by default.
	for name := range flagValues(t, testControlPlane(t, nil).apiServerArgs(nil)) {
		if strings.HasPrefix(name, "audit-") || strings.HasPrefix(name, "encryption-") {
			t.Errorf("--%s without --audit-log or encryption", name)
		}
	}
}

// The audit policy bramble writes is one the apiserver loads.
func TestAuditPolicyLoads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit-policy.yaml")
	if err := os.WriteFile(path, []byte(auditPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := auditpolicy.LoadPolicyFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rules) < 5 {
		t.Errorf("%d rules", len(p.Rules))
	}
}
