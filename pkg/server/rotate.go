package server

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/bramble-pi/bramble/pkg/layout"
	"github.com/bramble-pi/bramble/pkg/nodecreds"
)

// rotatable are the leaf certificates `bramble certificate rotate` renews,
// by service name (k3s's names where it has them): server/tls/<name> or,
// for the server's own node, agent/tls/<name>.
var rotatable = map[string][]string{
	"admin":              {"server:client-admin"},
	"api-server":         {"server:serving-kube-apiserver", "server:client-kube-apiserver"},
	"scheduler":          {"server:client-scheduler"},
	"controller-manager": {"server:client-controller"},
	"auth-proxy":         {"server:client-auth-proxy"},
	"kubelet":            {"agent:" + nodecreds.KubeletClient, "agent:" + nodecreds.KubeletServing},
	"kube-proxy":         {"agent:" + nodecreds.KubeProxyClient},
	"flannel":            {"agent:" + nodecreds.FlannelClient},
}

// RotatableServices are the names RotateCertificates accepts.
func RotatableServices() []string {
	names := make([]string, 0, len(rotatable))
	for n := range rotatable {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// RotateCertificates moves the leaf certificates and keys of services (all
// when empty) of a stopped server into a backup directory under
// server/tls; the next start issues new ones from the same CAs, so nodes and
// kubeconfigs keep working (the admin kubeconfig is written again). It
// returns the backup directory and the files moved.
func RotateCertificates(dataDir string, services []string, now time.Time) (string, []string, error) {
	if len(services) == 0 {
		services = RotatableServices()
	}
	d := layout.New(dataDir)
	if _, err := os.Stat(d.ServerTLS("server-ca.crt")); err != nil {
		return "", nil, fmt.Errorf("%s holds no bramble server (%w)", dataDir, err)
	}
	tlsDir := filepath.Dir(d.ServerTLS("x"))
	var files []string
	for _, s := range services {
		names, ok := rotatable[s]
		if !ok {
			return "", nil, fmt.Errorf("--service: no service %q (one of %s)", s, strings.Join(RotatableServices(), ", "))
		}
		for _, n := range names {
			where, name, _ := strings.Cut(n, ":")
			dir := tlsDir
			if where == "agent" {
				dir = filepath.Join(d.Agent(), "tls")
			}
			for _, ext := range []string{".crt", ".key"} {
				f := filepath.Join(dir, name+ext)
				if _, err := os.Stat(f); err == nil && !slices.Contains(files, f) {
					files = append(files, f)
				}
			}
		}
	}
	backup := filepath.Join(tlsDir, "backup-"+now.UTC().Format("20060102T150405Z"))
	if err := os.MkdirAll(backup, 0o700); err != nil {
		return "", nil, fmt.Errorf("backup directory: %w", err)
	}
	var moved []string
	for _, f := range files {
		dst := filepath.Join(backup, filepath.Base(filepath.Dir(filepath.Dir(f)))+"-"+filepath.Base(f))
		if err := os.Rename(f, dst); err != nil {
			return backup, moved, fmt.Errorf("move %s to %s: %w", f, backup, err)
		}
		moved = append(moved, f)
	}
	return backup, moved, nil
}
