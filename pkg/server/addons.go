package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"

	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/localstorage"
	"github.com/bramble-pi/bramble/pkg/logging"
	"github.com/bramble-pi/bramble/pkg/metricsserver"
	"github.com/bramble-pi/bramble/pkg/servicelb"
	"github.com/bramble-pi/bramble/pkg/supervisor"
	"github.com/bramble-pi/bramble/pkg/tlspolicy"
)

// Enabled reports whether a bundled add-on is not in --disable.
func (c Config) Enabled(addon string) bool {
	return !slices.ContainsFunc(c.Disable, func(d string) bool { return strings.TrimSpace(d) == addon })
}

// inProcessAddons are the bundled add-ons that are controllers in bramble
// only, without a manifest (pkg/deploy does not know them).
var inProcessAddons = []string{"servicelb", "metrics-server"}

// manifestsDisabled is --disable without the in-process add-ons.
func (c Config) manifestsDisabled() []string {
	return slices.DeleteFunc(slices.Clone(c.Disable), func(d string) bool { return slices.Contains(inProcessAddons, strings.TrimSpace(d)) })
}

// serviceLB gives LoadBalancer Services the node addresses
// (pkg/servicelb); nil with --disable servicelb.
func (cp *ControlPlane) serviceLB() supervisor.Component {
	if !cp.cfg.Enabled("servicelb") {
		// Once: the addresses it gave stop being forwarded.
		return cp.controllerAddon("servicelb-off", func(cs kubernetes.Interface, log *slog.Logger) (func(context.Context) error, error) {
			return func(ctx context.Context) error {
				if err := servicelb.Release(ctx, cs, log); err != nil && ctx.Err() == nil {
					log.Warn("could not remove the addresses servicelb gave", "err", err)
				}
				<-ctx.Done()
				return nil
			}, nil
		})
	}
	return cp.controllerAddon("servicelb", func(cs kubernetes.Interface, log *slog.Logger) (func(context.Context) error, error) {
		c, err := servicelb.New(cs, log)
		if err != nil {
			return nil, err
		}
		return c.Run, nil
	})
}

// requestHeader is how the apiserver's aggregation layer passes on who
// made a request (its front-proxy client certificate and headers).
func (cp *ControlPlane) requestHeader() metricsserver.RequestHeader {
	return metricsserver.RequestHeader{
		CAFile:              cp.creds.RequestHeaderCA,
		AllowedNames:        []string{"system:auth-proxy"},
		UsernameHeaders:     []string{"X-Remote-User"},
		GroupHeaders:        []string{"X-Remote-Group"},
		ExtraHeaderPrefixes: []string{"X-Remote-Extra-"},
	}
}

// metricsServer serves metrics.k8s.io from bramble's process
// (pkg/metricsserver) on the server's address; with --disable
// metrics-server it removes bramble's registration once.
func (cp *ControlPlane) metricsServer() supervisor.Component {
	name := "metrics-server"
	if !cp.cfg.Enabled(name) {
		name += "-off"
	} else {
		// The apiserver starts first: its aggregation layer's reports
		// that the API does not answer yet are start-up order.
		logging.APIPending(metricsserver.APIService, metricsserver.GroupVersion, metricsserver.Namespace+"/"+metricsserver.ServiceName)
	}
	return &supervisor.InProcess{ComponentName: name, StopWait: time.Second, Setup: func(ctx context.Context) (func(context.Context) error, error) {
		rc, err := clientcmd.BuildConfigFromFlags("", cp.creds.AdminKubeconfig)
		if err != nil {
			return nil, fmt.Errorf("metrics-server: %w", err)
		}
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return nil, fmt.Errorf("metrics-server: %w", err)
		}
		ag, err := aggregator.NewForConfig(rc)
		if err != nil {
			return nil, fmt.Errorf("metrics-server: %w", err)
		}
		clients := metricsserver.Clients{Core: cs, Aggregator: ag}
		log := cp.log.With("component", name)
		if !cp.cfg.Enabled("metrics-server") {
			return func(ctx context.Context) error {
				if err := metricsserver.Unregister(ctx, clients); err != nil && ctx.Err() == nil {
					log.Warn("could not remove metrics-server", "err", err)
				}
				<-ctx.Done()
				return nil
			}, nil
		}
		caBundle, err := os.ReadFile(cp.creds.AggregatedAPICA)
		if err != nil {
			return nil, fmt.Errorf("metrics-server: %w", err)
		}
		run, err := metricsserver.New(cp.metricsServerConfig())
		if err != nil {
			return nil, err
		}
		if err := metricsserver.Register(ctx, clients, cp.cfg.AdvertiseAddress, metricsserver.DefaultPort, caBundle); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error {
			go func() {
				// Errors about the API count once the aggregation layer
				// has found it serving (or it never does).
				err := metricsserver.WaitAvailable(ctx, clients, 2*time.Minute)
				logging.APIServing(metricsserver.APIService, metricsserver.GroupVersion, metricsserver.Namespace+"/"+metricsserver.ServiceName)
				if err != nil && ctx.Err() == nil {
					log.Warn("the apiserver does not reach metrics-server", "err", err)
				}
			}()
			return run(ctx)
		}, nil
	}}
}

func (cp *ControlPlane) metricsServerConfig() metricsserver.Config {
	cr := cp.creds
	return metricsserver.Config{
		Kubeconfig:  cr.AdminKubeconfig,
		BindAddress: cp.cfg.AdvertiseAddress, Port: metricsserver.DefaultPort,
		ServingCert: cr.MetricsServerCert, ServingKey: cr.MetricsServerKey,
		ClientCA: cr.ClientCA, RequestHeader: cp.requestHeader(),
		// The apiserver's own kubelet client and the kubelet-serving CA.
		KubeletCA: cr.KubeletServingCA, KubeletClientCert: cr.KubeletClientCert, KubeletClientKey: cr.KubeletClientKey,
		MinTLSVersion: tlspolicy.MinVersionName, CipherSuites: tlspolicy.CipherSuiteNames(),
	}
}

// localStorage provisions the local-path StorageClass's volumes
// (pkg/localstorage); nil with --disable local-storage.
func (cp *ControlPlane) localStorage() supervisor.Component {
	return cp.controllerAddon("local-storage", func(cs kubernetes.Interface, log *slog.Logger) (func(context.Context) error, error) {
		p, err := localstorage.NewProvisioner(cs, log)
		if err != nil {
			return nil, err
		}
		return p.Run, nil
	})
}

// controllerAddon is the component of a bundled add-on that is a
// controller in the server (admin credentials); nil when it is disabled.
func (cp *ControlPlane) controllerAddon(name string, newRun func(kubernetes.Interface, *slog.Logger) (func(context.Context) error, error)) supervisor.Component {
	if !cp.cfg.Enabled(name) {
		return nil
	}
	return &supervisor.InProcess{ComponentName: name, StopWait: time.Second, Setup: func(context.Context) (func(context.Context) error, error) {
		cs, err := kubeconfig.Clientset(cp.creds.AdminKubeconfig, 0)
		if err != nil {
			return nil, err
		}
		return newRun(cs, cp.log.With("component", name))
	}}
}

// nodeVolumes is the role and admission policy that let each node's bramble
// mark the local-path volumes of its own node removed (pkg/localstorage):
// RBAC gives every node read access to volumes and patch, the policy keeps
// a node's patch to its own volumes' removed annotation.
const nodeVolumes = "bramble-local-storage-own-volume"

func nodeVolumesRules() []admissionv1.Validation {
	annotationsOnly := func(from, to string) string {
		return fmt.Sprintf("(!has(%[1]s.metadata.annotations) || %[1]s.metadata.annotations.all(k, k == '%[3]s' || "+
			"(has(%[2]s.metadata.annotations) && k in %[2]s.metadata.annotations && %[2]s.metadata.annotations[k] == %[1]s.metadata.annotations[k])))",
			from, to, localstorage.AnnotationRemoved)
	}
	return []admissionv1.Validation{
		{Expression: "has(oldObject.metadata.labels) && '" + localstorage.LabelNode + "' in oldObject.metadata.labels && " +
			"request.userInfo.username == 'system:node:' + oldObject.metadata.labels['" + localstorage.LabelNode + "']",
			Message: "a node may change only the local-path volumes of its own node"},
		{Expression: unchanged("metadata.labels"), Message: "a node may not change a volume's labels"},
		{Expression: "object.spec == oldObject.spec", Message: "a node may not change a volume's spec"},
		{Expression: annotationsOnly("oldObject", "object") + " && " + annotationsOnly("object", "oldObject"),
			Message: "a node may change only the " + localstorage.AnnotationRemoved + " annotation of a volume"},
	}
}

func nodeVolumesAccess() access {
	return access{name: nodeVolumes, group: "system:nodes", rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"persistentvolumes"}, Verbs: []string{"get", "list", "watch", "patch"}},
	}, policy: nodeVolumes, resources: []string{"persistentvolumes"}, validations: nodeVolumesRules()}
}
