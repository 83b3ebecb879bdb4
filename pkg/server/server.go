package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bramble-pi/bramble/manifests"
	"github.com/bramble-pi/bramble/pkg/bootstrap"
	"github.com/bramble-pi/bramble/pkg/datastore"
	"github.com/bramble-pi/bramble/pkg/deploy"
	"github.com/bramble-pi/bramble/pkg/etcd"
	"github.com/bramble-pi/bramble/pkg/ingresstls"
	"github.com/bramble-pi/bramble/pkg/join"
	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/pki"
	"github.com/bramble-pi/bramble/pkg/supervisor"
	"github.com/bramble-pi/bramble/pkg/tlspolicy"
	"github.com/bramble-pi/bramble/pkg/token"
)

// ControlPlane is a prepared control plane: PKI, token and kubeconfigs are on
// disk, and Components returns what the supervisor runs.
type ControlPlane struct {
	cfg   Config
	log   *slog.Logger
	paths Paths
	creds *Credentials
	join  *join.Server
	// traefikSecrets narrows Traefik's reads of Secrets (pkg/ingresstls).
	traefikSecrets *ingresstls.Filter
	// encryption: the apiserver reads the encryption config file.
	encryption bool
	ownNode    ownNode // set by EnsureNodeCredentials
	// leader elects bramble's own controllers on a shared datastore (nil
	// with one server on SQLite).
	leader *leader
	// etcd is the embedded etcd member (nil on kine).
	etcd *etcd.Member
}

// CheckArgs refuses a bad --kube-*-arg: call it before anything is written
// or runs (Prepare does not check again).
func CheckArgs(cfg Config) error {
	if err := deploy.CheckDisabled(manifests.FS, cfg.Disable, inProcessAddons...); err != nil {
		return err
	}
	return (&ControlPlane{cfg: cfg, paths: NewPaths(cfg.DataDir), creds: &Credentials{}}).checkArgs()
}

// Prepare creates or reuses everything the control plane needs on disk; the
// caller has checked the pass-through arguments (CheckArgs).
func Prepare(cfg Config, log *slog.Logger) (*ControlPlane, error) {
	p := NewPaths(cfg.DataDir)
	if err := checkDatastoreKept(cfg, p); err != nil {
		return nil, err
	}
	begin := time.Now()
	creds, err := EnsureCredentials(cfg, p, begin)
	if err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	tok, err := token.EnsureServer(p.Token(), creds.CABundle, cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("server token: %w", err)
	}
	agentTok, err := token.EnsureAgent(p.AgentToken(), creds.CABundle, cfg.AgentToken)
	if err != nil {
		return nil, fmt.Errorf("agent token: %w", err)
	}
	if err := pki.WriteFile(authnConfigPath(p), []byte(authnConfig), 0o600); err != nil {
		return nil, err
	}
	// Without an allow-list manifest every component logs an error that "the
	// manifest file is empty"; an empty one logs another. This one names no
	// metric that exists, so it restricts nothing.
	if err := pki.WriteFile(metricLabelsPath(p), []byte("bramble_unused_metric,unused_label: unused\n"), 0o600); err != nil {
		return nil, err
	}
	encryption, err := ensureEncryption(cfg, p, log)
	if err != nil {
		return nil, err
	}
	if cfg.AuditLog != "" {
		if err := pki.WriteFile(auditPolicyPath(p), []byte(auditPolicy), 0o600); err != nil {
			return nil, err
		}
	}
	// Made before any server can join, which gets it with the CAs.
	if _, err := deploy.EnsureTieKey(p.Cred("addon-tie.key")); err != nil {
		return nil, err
	}
	log.Debug("control plane files ready", "dir", p.Root(), "took", time.Since(begin).Round(time.Millisecond))
	cp := &ControlPlane{cfg: cfg, log: log, paths: p, creds: creds, encryption: encryption,
		traefikSecrets: ingresstls.NewFilter(ingresstls.TraefikUser)}
	var shared func() (bootstrap.State, error)
	var etcdMember func(ctx context.Context, name, peerURL string) (string, error)
	kind := join.DatastoreExternal
	if cfg.Shared() {
		cp.leader = &leader{leading: make(chan struct{})}
		shared = func() (bootstrap.State, error) { return bootstrap.Collect(p.Root()) }
	}
	if cfg.EmbeddedEtcd() {
		kind = join.DatastoreEtcd
		cp.etcd = cp.newEtcd()
		etcdMember = func(ctx context.Context, name, peerURL string) (string, error) {
			cli := cp.etcd.Client()
			if cli == nil {
				return "", errors.New("etcd is not ready yet")
			}
			return etcd.AddLearner(ctx, cli, name, peerURL)
		}
	}
	clusterCfg := join.ClusterConfig{
		ClusterCIDR: cfg.ClusterCIDR.String(), ServiceCIDR: cfg.ServiceCIDR.String(),
		ClusterDNS: cfg.ClusterDNS.String(), ClusterDomain: cfg.ClusterDomain, FlannelBackend: cfg.FlannelBackend,
		DisableNetworkPolicy: !cfg.NetworkPolicy,
	}
	cp.join, err = join.NewServer(join.ServerOptions{
		CABundle: creds.CABundle, ClientCA: creds.clientCA.CertPEM, Cluster: clusterCfg,
		Tokens: []token.Token{tok, agentTok}, ServerNode: cfg.NodeName, Issuer: cp, Bootstrap: shared,
		Datastore: kind, EtcdMember: etcdMember,
	}, log.With("component", "join"))
	if err != nil {
		return nil, err
	}
	return cp, nil
}

// checkDatastoreKept refuses to start a cluster that exists (its CA is there)
// on a lost SQLite file (missing or empty): that would be a new, empty
// cluster under the old certificates, which agents reconnect to. The same
// for embedded etcd without its data dir, and for a cluster on SQLite
// restarted with --cluster-init (its objects are in state.db, not in etcd).
func checkDatastoreKept(cfg Config, p Paths) error {
	if cfg.DatastoreEndpoint != "" {
		return nil
	}
	if _, err := os.Stat(p.TLS("server-ca.crt")); err != nil {
		return nil // a new cluster
	}
	db := datastore.New(datastore.Config{DBDir: p.DBDir()}, nil).SQLitePath()
	st, dbErr := os.Stat(db)
	if cfg.EmbeddedEtcd() {
		switch {
		case etcd.HasData(p.EtcdDir()) || cfg.JoinServer != "":
			return nil // its member, or one added from the cluster's
		case dbErr == nil && st.Size() > 0:
			return nil // moved into etcd at start (migration)
		case cfg.AllowEmptyDatastore:
			return nil
		default:
			return fmt.Errorf("%s has no etcd data, but %s holds a cluster (its certificates and tokens): its objects would be lost. Restore the etcd data dir from a backup, or start with --allow-empty-datastore to run this cluster on an empty datastore", p.EtcdDir(), cfg.DataDir)
		}
	}
	if cfg.AllowEmptyDatastore {
		return nil
	}
	switch {
	case errors.Is(dbErr, os.ErrNotExist):
		return fmt.Errorf("%s is missing, but %s holds a cluster (its certificates and tokens): its objects would be lost. Restore state.db from a backup, or start with --allow-empty-datastore to run this cluster on an empty datastore", db, cfg.DataDir)
	case dbErr != nil:
		return fmt.Errorf("datastore: %w", dbErr)
	case st.Size() == 0:
		return fmt.Errorf("%s is empty, but %s holds a cluster (its certificates and tokens): its objects would be lost. Restore state.db from a backup, or start with --allow-empty-datastore to run this cluster on an empty datastore", db, cfg.DataDir)
	}
	return nil
}

// Components are the datastore, apiserver, scheduler and controller-manager,
// in start order. The admin kubeconfig is written once the apiserver is ready.
func (cp *ControlPlane) Components() []supervisor.Component {
	var ds supervisor.Component
	var endpoints func() []string
	if cp.etcd != nil {
		ds, endpoints = cp.etcd, func() []string { return []string{cp.etcd.ClientURL()} }
	} else {
		kine := datastore.New(datastore.Config{DBDir: cp.paths.DBDir(), Endpoint: cp.cfg.DatastoreEndpoint, Socket: cp.paths.KineSocket()}, cp.log.With("component", "datastore"))
		ds, endpoints = kine, kine.Endpoints
	}
	checkReady := readyz(cp.cfg.APIServerURL(), cp.creds)
	// The apiserver's arguments need kine's endpoint, known once kine started.
	api := newAPIServer(func() []string { return cp.apiServerArgs(endpoints()) }, func(ctx context.Context) error {
		if err := checkReady(ctx); err != nil {
			return err
		}
		if err := bootstrapRBAC(ctx, cp.creds.AdminKubeconfig); err != nil {
			return err
		}
		return cp.creds.WriteAdminKubeconfig(cp.cfg)
	}, cp.join.Wrap, cp.traefikSecrets.Wrap)
	// With several servers the controllers that act once per cluster are
	// elected (elected; kube-scheduler and kube-controller-manager elect
	// their own); certificates and snapshots are each server's own.
	comps := []supervisor.Component{ds, cp.migration(), api, cp.joinComponent(), cp.leaderElection(), cp.elected(cp.nodeIPAM()),
		newScheduler(cp.schedulerArgs()), newControllerManager(cp.controllerManagerArgs()),
		cp.elected(cp.deployController(cp.log.With("component", "deploy"))), cp.ingressTLS(), cp.elected(cp.localStorage()),
		cp.elected(cp.serviceLB()), cp.elected(cp.metricsServer()), cp.elected(cp.etcdMembers()), cp.certificates(), cp.snapshots()}
	return slices.DeleteFunc(comps, func(c supervisor.Component) bool { return c == nil })
}

// joinComponent enables the authenticated join endpoints once the apiserver
// serves, and frees a node's name when its Node is deleted.
func (cp *ControlPlane) joinComponent() supervisor.Component {
	return &supervisor.InProcess{ComponentName: "join", StopWait: time.Second, Setup: func(context.Context) (func(context.Context) error, error) {
		cs, err := kubeconfig.Clientset(cp.creds.AdminKubeconfig, 0)
		if err != nil {
			return nil, err
		}
		cp.join.SetClient(cs)
		return func(ctx context.Context) error {
			if cp.leader != nil { // one server frees the names
				select {
				case <-cp.leader.leading:
				case <-ctx.Done():
					return nil
				}
			}
			return join.DeleteNodePasswords(ctx, cs, cp.log.With("component", "join"))
		}, nil
	}}
}

const authnConfig = `apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
# Anonymous requests are refused except for the health checks.
anonymous:
  enabled: true
  conditions:
  - path: /livez
  - path: /readyz
  - path: /healthz
`

func authnConfigPath(p Paths) string {
	return filepath.Join(p.Root(), "etc", "authentication-config.yaml")
}

func metricLabelsPath(p Paths) string { return filepath.Join(p.Root(), "etc", "metric-labels.yaml") }

func (cp *ControlPlane) apiServerArgs(etcdServers []string) []string {
	c, cr := cp.cfg, cp.creds
	args := []string{
		"--advertise-address=" + c.AdvertiseAddress.String(),
		"--bind-address=" + c.BindAddress.String(),
		"--secure-port=" + strconv.Itoa(c.HTTPSPort),
		"--allow-privileged=true",
		"--authorization-mode=Node,RBAC",
		"--authentication-config=" + authnConfigPath(cp.paths),
		"--enable-admission-plugins=NodeRestriction",
		"--client-ca-file=" + cr.ClientCA,
		"--tls-cert-file=" + cr.ServingCert,
		"--tls-private-key-file=" + cr.ServingKey,
		"--tls-min-version=" + tlspolicy.MinVersionName,
		"--tls-cipher-suites=" + strings.Join(tlspolicy.CipherSuiteNames(), ","),
		"--kubelet-certificate-authority=" + cr.KubeletServingCA,
		"--kubelet-client-certificate=" + cr.KubeletClientCert,
		"--kubelet-client-key=" + cr.KubeletClientKey,
		"--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
		"--proxy-client-cert-file=" + cr.ProxyClientCert,
		"--proxy-client-key-file=" + cr.ProxyClientKey,
		"--requestheader-client-ca-file=" + cr.RequestHeaderCA,
		"--requestheader-allowed-names=" + strings.Join(cp.requestHeader().AllowedNames, ","),
		"--requestheader-username-headers=" + strings.Join(cp.requestHeader().UsernameHeaders, ","),
		"--requestheader-group-headers=" + strings.Join(cp.requestHeader().GroupHeaders, ","),
		"--requestheader-extra-headers-prefix=" + strings.Join(cp.requestHeader().ExtraHeaderPrefixes, ","),
		// The aggregation layer calls an APIService's endpoints, not its
		// Service's cluster IP: a server without agent has no kube-proxy,
		// and the in-process metrics-server is on the node's address.
		"--enable-aggregator-routing=true",
		"--service-account-issuer=https://kubernetes.default.svc." + c.ClusterDomain,
		"--service-account-key-file=" + cr.ServiceAccountKey,
		"--service-account-signing-key-file=" + cr.ServiceAccountKey,
		"--service-cluster-ip-range=" + c.ServiceCIDR.String(),
		"--service-node-port-range=30000-32767",
		"--storage-backend=etcd3",
		"--profiling=false",
		"--enable-priority-and-fairness=false",
		"--allow-metric-labels-manifest=" + metricLabelsPath(cp.paths),
	}
	if c.Shared() {
		// Several servers: each keeps its address in the kubernetes
		// Service's endpoints with a lease, dropped when it dies.
		args = append(args, "--endpoint-reconciler-type=lease")
	} else {
		// One server: the kubernetes Service's endpoints are written when
		// they change, not a lease renewed every 10 s (SD-card writes).
		args = append(args, "--endpoint-reconciler-type=master-count", "--apiserver-count=1")
	}
	for _, e := range etcdServers {
		args = append(args, "--etcd-servers="+e)
	}
	if cp.etcd != nil {
		args = append(args, "--etcd-cafile="+cr.EtcdClient.CAFile, "--etcd-certfile="+cr.EtcdClient.CertFile, "--etcd-keyfile="+cr.EtcdClient.KeyFile)
	}
	if cp.encryption {
		// Reloaded without a restart (polled every minute): rotate-keys.
		args = append(args, "--encryption-provider-config="+cp.paths.EncryptionConfig(),
			"--encryption-provider-config-automatic-reload=true")
	}
	if c.AuditLog != "" {
		args = append(args, auditArgs(c.AuditLog, cp.paths)...)
	}
	return c.apiServerExtra().Merge(args)
}

func (cp *ControlPlane) schedulerArgs() []string {
	return cp.cfg.schedulerExtra().Merge([]string{
		"--kubeconfig=" + cp.creds.SchedulerKubeconfig,
		"--leader-elect=" + strconv.FormatBool(cp.cfg.Shared()),
		"--secure-port=0",
		"--profiling=false",
		"--allow-metric-labels-manifest=" + metricLabelsPath(cp.paths),
	})
}

func (cp *ControlPlane) controllerManagerArgs() []string {
	c, cr := cp.cfg, cp.creds
	return c.controllerExtra().Merge([]string{
		"--kubeconfig=" + cr.ControllerKubeconfig,
		// Elected only with several servers possible: a lease renewed
		// every 2 s is writes one server does not need.
		"--leader-elect=" + strconv.FormatBool(c.Shared()),
		"--secure-port=0",
		"--profiling=false",
		// Node pod CIDRs come from bramble's own node-ipam component.
		"--allocate-node-cidrs=false",
		"--cluster-cidr=" + c.ClusterCIDR.String(),
		"--service-cluster-ip-range=" + c.ServiceCIDR.String(),
		"--root-ca-file=" + cr.ServerCA,
		"--service-account-private-key-file=" + cr.ServiceAccountKey,
		"--use-service-account-credentials=true",
		"--configure-cloud-routes=false",
		"--cluster-signing-kube-apiserver-client-cert-file=" + cr.ClientCA,
		"--cluster-signing-kube-apiserver-client-key-file=" + keyOf(cr.ClientCA),
		"--cluster-signing-kubelet-client-cert-file=" + cr.ClientCA,
		"--cluster-signing-kubelet-client-key-file=" + keyOf(cr.ClientCA),
		// Nothing signed through the CSR API is trusted as the apiserver:
		// the server CA signs only the apiserver's serving certificate.
		"--cluster-signing-kubelet-serving-cert-file=" + cr.KubeletServingCA,
		"--cluster-signing-kubelet-serving-key-file=" + keyOf(cr.KubeletServingCA),
		"--cluster-signing-legacy-unknown-cert-file=" + cr.KubeletServingCA,
		"--cluster-signing-legacy-unknown-key-file=" + keyOf(cr.KubeletServingCA),
		"--allow-metric-labels-manifest=" + metricLabelsPath(cp.paths),
		// Controllers with no work on a Pi cluster, and memory to save: the
		// admission policy type checker (5 MiB of OpenAPI schemas) and DRA
		// device taints.
		"--controllers=*,-validatingadmissionpolicy-status-controller,-device-taint-eviction-controller",
	})
}

func keyOf(certPath string) string { return strings.TrimSuffix(certPath, ".crt") + ".key" }
