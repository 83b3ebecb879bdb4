package containerd

import (
	"slices"
	"testing"
)

func TestCommandLine(t *testing.T) {
	c := testConfig(t)
	if got, want := c.commandLine(), []string{"--config=" + c.ConfigFile()}; !slices.Equal(got, want) {
		t.Errorf("%q, want %q", got, want)
	}
	c.Args = []string{"log-level=debug"}
	if got, want := c.commandLine(), []string{"--config=" + c.ConfigFile(), "--log-level=debug"}; !slices.Equal(got, want) {
		t.Errorf("%q, want %q", got, want)
	}
	if err := CheckArgs(c.Args); err != nil {
		t.Error(err)
	}
}
