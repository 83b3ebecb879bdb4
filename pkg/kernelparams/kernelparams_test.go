package kernelparams

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// procSys writes a /proc/sys with the given values (name -> value; a
// parameter left out is absent, "<dir>" makes it unreadable).
func procSys(t *testing.T, values map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, v := range values {
		file := filepath.Join(dir, strings.ReplaceAll(name, ".", "/"))
		if v == "<dir>" {
			if err := os.MkdirAll(file, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// kubeletValues are the expected values, as on a host the kubelet set up.
func kubeletValues() map[string]string {
	m := map[string]string{}
	for _, p := range Expected() {
		m[p.Name()] = p.Value
	}
	return m
}

// The kubelet's values, as it lists them.
func TestExpected(t *testing.T) {
	want := map[string]string{"vm.overcommit_memory": "1", "vm.panic_on_oom": "0", "kernel.panic": "10", "kernel.panic_on_oops": "1",
		"kernel.keys.root_maxkeys": "1000000", "kernel.keys.root_maxbytes": "25000000"}
	got := kubeletValues()
	if len(got) != len(want) {
		t.Fatalf("expected %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %s", k, got[k], v)
		}
	}
}

func TestEnsure(t *testing.T) {
	debian := kubeletValues() // a fresh Debian: the kernel's defaults
	debian["vm.overcommit_memory"], debian["kernel.panic"], debian["kernel.panic_on_oops"] = "0", "0", "0"
	missing := kubeletValues()
	delete(missing, "kernel.keys.root_maxbytes")
	unreadable := kubeletValues()
	unreadable["vm.panic_on_oom"] = "<dir>"

	tests := []struct {
		name       string
		values     map[string]string
		hold       bool
		set        []string
		differWith string
	}{
		{"already as the kubelet wants", kubeletValues(), true, nil, ""},
		{"fresh host: three set", debian, true, []string{"vm.overcommit_memory=1 (was 0)", "kernel.panic=10 (was 0)", "kernel.panic_on_oops=1 (was 0)"}, ""},
		{"a parameter the kernel lacks", missing, false, nil, "kernel.keys.root_maxbytes: not in this kernel"},
		{"a parameter that cannot be read", unreadable, false, nil, "vm.panic_on_oom: read: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := procSys(t, tt.values)
			r := Ensure(dir)
			if r.Hold() != tt.hold {
				t.Errorf("Hold() = %v, want %v (differ: %q)", r.Hold(), tt.hold, r.Differ)
			}
			if !slices.Equal(r.Set, tt.set) {
				t.Errorf("set %q, want %q", r.Set, tt.set)
			}
			if tt.differWith != "" && (len(r.Differ) != 1 || !strings.HasPrefix(r.Differ[0], tt.differWith)) {
				t.Errorf("differ %q, want one starting with %q", r.Differ, tt.differWith)
			}
			if tt.hold {
				for _, p := range Expected() {
					b, _ := os.ReadFile(filepath.Join(dir, p.Path))
					if strings.TrimSpace(string(b)) != p.Value {
						t.Errorf("%s = %q after Ensure, want %s", p.Name(), b, p.Value)
					}
				}
				// Again: nothing to do.
				if again := Ensure(dir); len(again.Set) != 0 || !again.Hold() {
					t.Errorf("second Ensure: %+v", again)
				}
			}
		})
	}
}
