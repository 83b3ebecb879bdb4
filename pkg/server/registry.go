package server

import (
	"crypto/x509"
	"fmt"
	"os"

	"github.com/bramble-pi/bramble/pkg/images"
	"github.com/bramble-pi/bramble/pkg/registry"
)

// ServeImages serves the images of the server node's containerd (at socket,
// namespace k8s.io) to the cluster's nodes on the apiserver's port, under
// /v2/: the agents pull through it. Only a node's client certificate is let
// in.
func (cp *ControlPlane) ServeImages(socket string) error {
	pem, err := os.ReadFile(cp.creds.ClientCA)
	if err != nil {
		return fmt.Errorf("image registry: read the client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("image registry: no certificate in %s", cp.creds.ClientCA)
	}
	store, err := registry.Containerd(socket, images.DefaultNamespace)
	if err != nil {
		return fmt.Errorf("image registry: %w", err)
	}
	cp.join.Mount(registry.Prefix, registry.New(store, pool, cp.log.With("component", "registry")))
	return nil
}
