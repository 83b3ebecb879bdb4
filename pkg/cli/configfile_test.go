package cli

import "testing"

func TestClosest(t *testing.T) {
	known := flagNames(serverFlags())
	for in, want := range map[string]string{
		"https-listen-prot": "https-listen-port",
		"data_dir":          "data-dir",
		"tls-sans":          "tls-san",
		"zzzzzzzzzzzz":      "",
	} {
		if got := closest(in, known); got != want {
			t.Errorf("closest(%q) = %q, want %q", in, got, want)
		}
	}
}
