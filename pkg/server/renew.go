package server

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/bramble-pi/bramble/pkg/nodecreds"
	"github.com/bramble-pi/bramble/pkg/pki"
	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// certificates renews, while the server runs, every leaf certificate that
// needs it (a third of its lifetime left): the control plane's and its own
// node's. The components read the new files by themselves: the apiserver
// watches its serving certificate and CAs, client-go reloads client
// certificates from files (scheduler, controller-manager, the apiserver's
// kubelet client, kubelet, kube-proxy, flannel), the kubelet reloads its
// serving certificate. The admin kubeconfig, which embeds its certificate,
// is written again when that one is renewed.
func (cp *ControlPlane) certificates() supervisor.Component {
	return &supervisor.InProcess{ComponentName: "certificates", StopWait: time.Second, Setup: func(context.Context) (func(context.Context) error, error) {
		return func(ctx context.Context) error {
			for {
				wait := time.Hour
				if cp.ownNode.dir != "" {
					wait = nodecreds.In(cp.ownNode.dir).RenewCheckInterval()
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
				if err := cp.RenewCertificates(time.Now()); err != nil {
					cp.log.Warn("renewing certificates failed; trying again", "in", wait, "err", err)
				}
			}
		}, nil
	}}
}

// RenewCertificates renews what needs renewal at now.
func (cp *ControlPlane) RenewCertificates(now time.Time) error {
	admin, _ := os.ReadFile(cp.creds.AdminCert)
	creds, err := EnsureCredentials(cp.cfg, cp.paths, now)
	if err != nil {
		return fmt.Errorf("control plane certificates: %w", err)
	}
	if after, _ := os.ReadFile(creds.AdminCert); !bytes.Equal(admin, after) {
		if err := creds.WriteAdminKubeconfig(cp.cfg); err != nil {
			return fmt.Errorf("admin kubeconfig: %w", err)
		}
		cert, _ := pki.ReadCert(creds.AdminCert)
		if cert != nil {
			cp.log.Info("admin certificate renewed: the admin kubeconfig is written again", "path", cp.cfg.KubeconfigPath, "expires", cert.NotAfter.Format(time.RFC3339))
		}
	}
	if cp.ownNode.dir == "" {
		return nil
	}
	nc := nodecreds.In(cp.ownNode.dir)
	before := nc.Expiry()
	if _, err := cp.ensureNodeCredentials(now); err != nil {
		return fmt.Errorf("node certificates: %w", err)
	}
	if after := nc.Expiry(); !after.Equal(before) {
		cp.log.Info("node certificates renewed", "node", cp.ownNode.name, "expires", after.Format(time.RFC3339))
	}
	return nil
}
