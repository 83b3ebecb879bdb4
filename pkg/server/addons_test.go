package server

import (
	"slices"
	"testing"
)

func TestAddonsDisabled(t *testing.T) {
	c := Config{Disable: []string{"traefik", " servicelb", "local-storage", "metrics-server"}}
	if got, want := c.manifestsDisabled(), []string{"traefik", "local-storage"}; !slices.Equal(got, want) {
		t.Errorf("manifests disabled %q, want %q (servicelb and metrics-server have no manifest)", got, want)
	}
	for addon, want := range map[string]bool{"servicelb": false, "local-storage": false, "metrics-server": false, "coredns": true} {
		if c.Enabled(addon) != want {
			t.Errorf("Enabled(%s) = %v, want %v", addon, !want, want)
		}
	}
	cp := &ControlPlane{cfg: c}
	if cp.localStorage() != nil {
		t.Error("local-storage component with --disable local-storage")
	}
	if off := cp.serviceLB(); off == nil || off.Name() != "servicelb-off" {
		t.Errorf("--disable servicelb: component %v, want the one that takes its addresses back", off)
	}
	if off := cp.metricsServer(); off == nil || off.Name() != "metrics-server-off" {
		t.Errorf("--disable metrics-server: component %v, want the one that removes its APIService", off)
	}
}
