package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	genericapiserver "k8s.io/apiserver/pkg/server"
	encryptionconfigcontroller "k8s.io/apiserver/pkg/server/options/encryptionconfig/controller"
	"k8s.io/client-go/tools/cache"
	cliflag "k8s.io/component-base/cli/flag"
	apiapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apioptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	schedapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	schedoptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"

	"github.com/bramble-pi/bramble/pkg/secretsenc"
	"github.com/bramble-pi/bramble/pkg/supervisor"
	"github.com/bramble-pi/bramble/pkg/tlspolicy"
)

// parseFlags parses args into a component's named flag sets.
func parseFlags(name string, sets cliflag.NamedFlagSets, args []string) error {
	if err := flagSet(name, sets).Parse(args); err != nil {
		return fmt.Errorf("%s arguments: %w", name, err)
	}
	return nil
}

// newAPIServer runs kube-apiserver; wrap puts bramble's own handlers (the
// join endpoints) in front of its handler chain, on the same port, and
// inner goes inside the chain, after authentication and authorization.
func newAPIServer(args func() []string, ready func(context.Context) error, wrap, inner func(http.Handler) http.Handler) *supervisor.InProcess {
	// The apiserver's graceful shutdown waits up to --request-timeout for open
	// watches, and in-process clients (the kubelet) never close theirs; every
	// write is already committed to the datastore, so wait a bounded time.
	return &supervisor.InProcess{ComponentName: "kube-apiserver", Check: ready, StopWait: 3 * time.Second, Setup: func(ctx context.Context) (func(context.Context) error, error) {
		s := apioptions.NewServerRunOptions()
		if err := parseFlags("kube-apiserver", s.Flags(), args()); err != nil {
			return nil, err
		}
		if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
			return nil, err
		}
		completed, err := s.Complete(ctx)
		if err != nil {
			return nil, err
		}
		if errs := completed.Validate(); len(errs) != 0 {
			return nil, fmt.Errorf("invalid options: %v", errs)
		}
		return func(ctx context.Context) error { return runAPIServer(ctx, completed, wrap, inner) }, nil
	}}
}

// runAPIServer is kube-apiserver's app.Run with one change: the outermost
// handler chain (the aggregator's, the one that is served) is wrapped, and
// inner wraps the handler that chain protects.
func runAPIServer(ctx context.Context, opts apioptions.CompletedOptions, wrap, inner func(http.Handler) http.Handler) error {
	// The apiserver re-reads the Secrets encryption config every minute
	// (upstream's default); a small file's hash every few seconds costs
	// nothing, and `secrets-encrypt rotate-keys` waits twice for a reload.
	encryptionconfigcontroller.EncryptionConfigFileChangePollDuration = secretsenc.ReloadPoll
	if opts.InformerName == nil {
		name, err := cache.NewInformerName("kube-apiserver")
		if err != nil {
			return err
		}
		opts.InformerName = name
	}
	config, err := apiapp.NewConfig(opts)
	if err != nil {
		return err
	}
	generic := &config.Aggregator.GenericConfig.Config
	build := generic.BuildHandlerChainFunc
	generic.BuildHandlerChainFunc = func(h http.Handler, c *genericapiserver.Config) http.Handler {
		return wrap(build(inner(h), c))
	}
	completed, err := config.Complete()
	if err != nil {
		return err
	}
	chain, err := apiapp.CreateServerChain(completed)
	if err != nil {
		return err
	}
	prepared, err := chain.PrepareRun()
	if err != nil {
		return err
	}
	return prepared.Run(ctx)
}

func newScheduler(args []string) *supervisor.InProcess {
	return &supervisor.InProcess{ComponentName: "kube-scheduler", Setup: func(ctx context.Context) (func(context.Context) error, error) {
		opts := schedoptions.NewOptions()
		if err := parseFlags("kube-scheduler", *opts.Flags, args); err != nil {
			return nil, err
		}
		if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
			return nil, err
		}
		name, err := cache.NewInformerName("kube-scheduler")
		if err != nil {
			return nil, err
		}
		opts.InformerName = name
		cc, sched, err := schedapp.Setup(ctx, opts)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return schedapp.Run(ctx, cc, sched) }, nil
	}}
}

func newControllerManager(args []string) *supervisor.InProcess {
	return &supervisor.InProcess{ComponentName: "kube-controller-manager", Setup: func(ctx context.Context) (func(context.Context) error, error) {
		s, err := kcmoptions.NewKubeControllerManagerOptions()
		if err != nil {
			return nil, err
		}
		sets := s.Flags(kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases())
		s.ParsedFlags = &sets
		if err := parseFlags("kube-controller-manager", sets, args); err != nil {
			return nil, err
		}
		if err := s.ComponentGlobalsRegistry.Set(); err != nil {
			return nil, err
		}
		c, err := s.Config(ctx, kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases())
		if err != nil {
			return nil, err
		}
		completed := c.Complete()
		return func(ctx context.Context) error { return kcmapp.Run(ctx, completed) }, nil
	}}
}

// readyz polls the apiserver's /readyz as the admin until it answers ok.
func readyz(url string, cr *Credentials) func(context.Context) error {
	return func(ctx context.Context) error {
		client, err := adminHTTPClient(cr)
		if err != nil {
			return err
		}
		var last error
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/readyz", nil)
			resp, err := client.Do(req)
			if err == nil {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
				err = fmt.Errorf("/readyz: %s: %s", resp.Status, body)
			}
			last = err
			select {
			case <-ctx.Done():
				return fmt.Errorf("apiserver not ready: %w", last)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

func adminHTTPClient(cr *Credentials) (*http.Client, error) {
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(cr.ServerCA)
	if err != nil {
		return nil, fmt.Errorf("read server CA: %w", err)
	}
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(cr.AdminCert, cr.AdminKey)
	if err != nil {
		return nil, fmt.Errorf("load admin certificate: %w", err)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tlspolicy.Apply(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}),
	}}, nil
}
