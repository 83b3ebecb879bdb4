package server

import (
	"slices"
	"testing"
)

func TestAddonsDisabled(t *testing.T) {
	c := Config{Disable: []string{"traefik", " servicelb", "local-storage"}}
	if got, want := c.manifestsDisabled(), []string{"traefik", "local-storage"}; !slices.Equal(got, want) {
		t.Errorf("manifests disabled %q, want %q (servicelb has no manifest)", got, want)
	}
	for addon, want := range map[string]bool{"servicelb": false, "local-storage": false, "coredns": true} {
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
}
