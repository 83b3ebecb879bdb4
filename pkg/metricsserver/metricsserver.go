// Package metricsserver is the metrics-server add-on: metrics-server's own
// packages (sigs.k8s.io/metrics-server) run in bramble's process, scrape
// every kubelet's /metrics/resource and serve metrics.k8s.io, which the
// apiserver's aggregation layer proxies to them (APIService
// v1beta1.metrics.k8s.io, a selectorless Service and its EndpointSlice).
package metricsserver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"time"

	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	"k8s.io/kube-openapi/pkg/common"
	openapiutil "k8s.io/kube-openapi/pkg/util"
	msoptions "sigs.k8s.io/metrics-server/cmd/metrics-server/app/options"
	msapi "sigs.k8s.io/metrics-server/pkg/api"
	generatedopenapi "sigs.k8s.io/metrics-server/pkg/api/generated/openapi"
)

const (
	// Namespace and ServiceName name the Service the APIService points at.
	Namespace   = "kube-system"
	ServiceName = "metrics-server"
	// APIService is the registration of metrics.k8s.io.
	APIService = "v1beta1.metrics.k8s.io"
	// GroupVersion is the API it serves, as discovery names it.
	GroupVersion = "metrics.k8s.io/v1beta1"
	// DefaultPort is where the server listens on the node's address.
	DefaultPort = 10251
	// resolution is how often the kubelets are scraped (metrics-server's
	// own default is 60 s; kubectl top needs two scrapes).
	resolution = 15 * time.Second
)

// ServingName is the name the aggregation layer checks in the serving
// certificate: <service>.<namespace>.svc.
func ServingName() string { return ServiceName + "." + Namespace + ".svc" }

// RequestHeader is how the apiserver's aggregation layer says who made a
// request: its front-proxy client certificate (signed by CAFile, one of
// AllowedNames) and the headers naming the user.
type RequestHeader struct {
	CAFile              string
	AllowedNames        []string
	UsernameHeaders     []string
	GroupHeaders        []string
	ExtraHeaderPrefixes []string
}

// Config is what the in-process metrics-server needs.
type Config struct {
	// Kubeconfig reaches the apiserver: node and pod informers, and the
	// delegated authentication (TokenReview) and authorization
	// (SubjectAccessReview) of the requests it serves.
	Kubeconfig string
	// BindAddress and Port: where it serves. The address must be one the
	// apiserver reaches directly (the node's address).
	BindAddress net.IP
	Port        int
	// ServingCert and ServingKey are its serving certificate (for
	// ServingName), read again when the files change.
	ServingCert, ServingKey string
	// ClientCA verifies client certificates sent to it directly.
	ClientCA      string
	RequestHeader RequestHeader
	// KubeletCA verifies the kubelets' serving certificates; the client
	// certificate is what it shows them (allowed nodes/metrics).
	KubeletCA, KubeletClientCert, KubeletClientKey string
	MinTLSVersion                                  string
	CipherSuites                                   []string
}

func (c Config) check() error {
	var errs []error
	for name, v := range map[string]string{"kubeconfig": c.Kubeconfig, "serving certificate": c.ServingCert, "serving key": c.ServingKey,
		"client CA": c.ClientCA, "request-header CA": c.RequestHeader.CAFile, "kubelet CA": c.KubeletCA,
		"kubelet client certificate": c.KubeletClientCert, "kubelet client key": c.KubeletClientKey} {
		if v == "" {
			errs = append(errs, fmt.Errorf("no %s given", name))
		}
	}
	if c.BindAddress == nil || c.BindAddress.IsUnspecified() || c.BindAddress.IsLoopback() {
		errs = append(errs, fmt.Errorf("bind address %v: need the node's own address (the apiserver routes to it through an EndpointSlice, where loopback is not allowed)", c.BindAddress))
	}
	if c.Port <= 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d out of range", c.Port))
	}
	return errors.Join(errs...)
}

func (c Config) options() *msoptions.Options {
	o := msoptions.NewOptions()
	o.Kubeconfig = c.Kubeconfig
	o.MetricResolution = resolution

	o.SecureServing.BindAddress = c.BindAddress
	o.SecureServing.BindPort = c.Port
	o.SecureServing.ServerCert.CertKey.CertFile = c.ServingCert
	o.SecureServing.ServerCert.CertKey.KeyFile = c.ServingKey
	o.SecureServing.MinTLSVersion = c.MinTLSVersion
	o.SecureServing.CipherSuites = c.CipherSuites

	o.Authentication.RemoteKubeConfigFile = c.Kubeconfig
	o.Authentication.ClientCert.ClientCA = c.ClientCA
	rh := &o.Authentication.RequestHeader
	rh.ClientCAFile = c.RequestHeader.CAFile
	rh.AllowedNames = c.RequestHeader.AllowedNames
	rh.UsernameHeaders = c.RequestHeader.UsernameHeaders
	rh.GroupHeaders = c.RequestHeader.GroupHeaders
	rh.ExtraHeaderPrefixes = c.RequestHeader.ExtraHeaderPrefixes
	// Everything is given: no look-up of the extension-apiserver-authentication
	// ConfigMap.
	o.Authentication.SkipInClusterLookup = true
	o.Authorization.RemoteKubeConfigFile = c.Kubeconfig
	o.Features.EnableProfiling = false

	k := o.KubeletClient
	k.KubeletUseNodeStatusPort = true
	k.KubeletPreferredAddressTypes = []string{"InternalIP", "ExternalIP", "Hostname"}
	k.KubeletCAFile = c.KubeletCA
	k.KubeletClientCertFile = c.KubeletClientCert
	k.KubeletClientKeyFile = c.KubeletClientKey
	return o
}

// New prepares the server (its port is bound on return); the returned
// function serves and scrapes until its context ends.
func New(c Config) (func(context.Context) error, error) {
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("metrics-server: %w", err)
	}
	o := c.options()
	// Not o.Validate: it applies the logging options again, and bramble
	// configures the process's logging once.
	errs := append(o.KubeletClient.Validate(), o.GenericServerRunOptions.Validate()...)
	errs = append(errs, o.SecureServing.Validate()...)
	errs = append(errs, o.Authentication.Validate()...)
	errs = append(errs, o.Authorization.Validate()...)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("metrics-server options: %w", err)
	}
	cfg, err := o.ServerConfig()
	if err != nil {
		return nil, fmt.Errorf("metrics-server config: %w", err)
	}
	namer := openapinamer.NewDefinitionNamer(msapi.Scheme)
	v2, v3 := genericapiserver.DefaultOpenAPIConfig(openAPIDefinitions, namer), genericapiserver.DefaultOpenAPIV3Config(openAPIDefinitions, namer)
	v2.Info, v3.Info = cfg.Apiserver.OpenAPIConfig.Info, cfg.Apiserver.OpenAPIV3Config.Info
	cfg.Apiserver.OpenAPIConfig, cfg.Apiserver.OpenAPIV3Config = v2, v3
	s, err := cfg.Complete()
	if err != nil {
		return nil, fmt.Errorf("metrics-server: %w", err)
	}
	return func(ctx context.Context) error {
		if err := s.RunUntil(ctx.Done()); err != nil && ctx.Err() == nil {
			return fmt.Errorf("metrics-server: %w", err)
		}
		return nil
	}, nil
}

// openAPIDefinitions are metrics-server's generated OpenAPI definitions,
// also under the model names that the types of k8s.io/* v0.37 give
// themselves (OpenAPIModelName, io.k8s.metrics...): metrics-server v0.8.0
// was generated with the Go package paths (k8s.io/metrics/...), and the
// apiserver library looks the API's types up by the new names.
func openAPIDefinitions(ref common.ReferenceCallback) map[string]common.OpenAPIDefinition {
	defs := generatedopenapi.GetOpenAPIDefinitions(ref)
	names := slices.Collect(maps.Keys(defs))
	for _, name := range names {
		if alias := openapiutil.ToRESTFriendlyName(name); alias != name {
			if _, ok := defs[alias]; !ok {
				defs[alias] = defs[name]
			}
		}
	}
	return defs
}

// Clients are what Register and Unregister write with.
type Clients struct {
	Core       kubernetes.Interface
	Aggregator aggregator.Interface
}
