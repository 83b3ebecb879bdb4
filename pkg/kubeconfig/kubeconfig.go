// Package kubeconfig writes kubeconfig files for the admin and for components.
package kubeconfig

import (
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/bramble-pi/bramble/pkg/pki"
)

// Spec is what a kubeconfig points at and authenticates with.
type Spec struct {
	Server   string // https://host:port
	CAFile   string
	CertFile string
	KeyFile  string
	// Embed copies the CA, certificate and key into the file, so it can be
	// copied to another machine. Otherwise the file refers to the paths.
	Embed bool
}

// Write writes a kubeconfig for spec to path with mode (and its directory
// 0700 if it has to be created).
func Write(path string, mode os.FileMode, spec Spec) error {
	cluster := clientcmdapi.NewCluster()
	cluster.Server = spec.Server
	auth := clientcmdapi.NewAuthInfo()
	if spec.Embed {
		var err error
		if cluster.CertificateAuthorityData, err = os.ReadFile(spec.CAFile); err != nil {
			return fmt.Errorf("kubeconfig %s: %w", path, err)
		}
		if auth.ClientCertificateData, err = os.ReadFile(spec.CertFile); err != nil {
			return fmt.Errorf("kubeconfig %s: %w", path, err)
		}
		if auth.ClientKeyData, err = os.ReadFile(spec.KeyFile); err != nil {
			return fmt.Errorf("kubeconfig %s: %w", path, err)
		}
	} else {
		cluster.CertificateAuthority = spec.CAFile
		auth.ClientCertificate = spec.CertFile
		auth.ClientKey = spec.KeyFile
	}
	ctx := clientcmdapi.NewContext()
	ctx.Cluster, ctx.AuthInfo = "default", "default"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["default"] = cluster
	cfg.AuthInfos["default"] = auth
	cfg.Contexts["default"] = ctx
	cfg.CurrentContext = "default"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	if err := pki.WriteFile(path, data, mode); err != nil {
		return err
	}
	// WriteFile's rename keeps the mode, but an existing file's mode may have
	// been changed by hand: enforce the requested one.
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return nil
}

// Clientset connects to the cluster a kubeconfig file points at; a timeout
// of 0 leaves client-go's default (none).
func Clientset(path string, timeout time.Duration) (*kubernetes.Clientset, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	rc.Timeout = timeout
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return cs, nil
}
