package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/bramble-pi/bramble/manifests"
	"github.com/bramble-pi/bramble/pkg/deploy"
	"github.com/bramble-pi/bramble/pkg/ingresstls"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// ManifestsDir is where bundled and user manifests live.
func (p Paths) ManifestsDir() string { return p.d.Manifests() }

// deployController applies the manifests directory. It starts at once and
// does its work in the background, so it never delays the node.
func (cp *ControlPlane) deployController(log *slog.Logger) supervisor.Component {
	cfg := cp.deployConfig()
	return &supervisor.InProcess{ComponentName: "deploy", StopWait: 2 * time.Second, Setup: func(context.Context) (func(context.Context) error, error) {
		if err := deploy.WriteBundled(cfg); err != nil {
			return nil, err
		}
		key, err := deploy.EnsureTieKey(cp.paths.Cred("addon-tie.key"))
		if err != nil {
			return nil, err
		}
		cfg.TieKey = key
		return func(ctx context.Context) error {
			c, err := deploy.New(ctx, cfg, log)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			return c.Run(ctx)
		}, nil
	}}
}

// deployConfig is the add-on controller's configuration.
func (cp *ControlPlane) deployConfig() deploy.Config {
	return deploy.Config{
		Dir:        cp.paths.ManifestsDir(),
		Bundled:    manifests.FS,
		Disabled:   cp.cfg.manifestsDisabled(),
		Values:     deploy.Values{ClusterDNS: cp.cfg.ClusterDNS.String(), ClusterDomain: cp.cfg.ClusterDomain},
		Kubeconfig: cp.creds.AdminKubeconfig,
		Interval:   2 * time.Second,
	}
}

// ingressTLS labels the TLS Secrets that Ingresses reference, the only
// Secrets the apiserver then shows Traefik (pkg/ingresstls).
func (cp *ControlPlane) ingressTLS() supervisor.Component {
	return &supervisor.InProcess{ComponentName: "ingress-tls", StopWait: time.Second, Setup: func(context.Context) (func(context.Context) error, error) {
		c, err := ingresstls.New(cp.creds.AdminKubeconfig, cp.log.With("component", "ingress-tls"))
		if err != nil {
			return nil, err
		}
		cp.traefikSecrets.Serve(c)
		if cp.leader != nil {
			c.ActAfter(cp.leader.leading)
		}
		return c.Run, nil
	}}
}
