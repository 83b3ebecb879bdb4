package extraargs

import (
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestMerge(t *testing.T) {
	base := []string{"--secure-port=6443", "--etcd-servers=a", "--etcd-servers=b", "--profiling=false"}
	tests := []struct {
		name string
		user []string
		want []string
	}{
		{"none", nil, base},
		{"override one, dashes optional", []string{"secure-port=7443"},
			[]string{"--etcd-servers=a", "--etcd-servers=b", "--profiling=false", "--secure-port=7443"}},
		{"a list replaced, not added to", []string{"--etcd-servers=c"},
			[]string{"--secure-port=6443", "--profiling=false", "--etcd-servers=c"}},
		{"repeated user values kept, bare boolean", []string{"-etcd-servers=c", "etcd-servers=d", "profiling"},
			[]string{"--secure-port=6443", "--etcd-servers=c", "--etcd-servers=d", "--profiling"}},
		{"new flag appended, value with = and commas", []string{"feature-gates=A=true,B=false"},
			append(slices.Clone(base), "--feature-gates=A=true,B=false")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Args{Values: tt.user}.Merge(base)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Merge(%q) = %q, want %q", tt.user, got, tt.want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	got := Args{Values: []string{"a=1", "--b", "a=2"}}.Names()
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Names = %q", got)
	}
}

func TestCheck(t *testing.T) {
	fs := pflag.NewFlagSet("c", pflag.ContinueOnError)
	fs.String("log-level", "", "")
	fs.String("root", "", "")
	refused := map[string]string{"root": "bramble sets it"}
	tests := []struct {
		values []string
		want   string // "" for no error
	}{
		{[]string{"log-level=debug", "--log-level=info"}, ""},
		{[]string{"no-such-flag=1"}, `--containerd-arg "no-such-flag=1": containerd has no flag --no-such-flag`},
		{[]string{"=x"}, `--containerd-arg "=x": no flag name`},
		{[]string{"root=/x"}, `--containerd-arg "root=/x": containerd does not take --root from the user: bramble sets it`},
	}
	for _, tt := range tests {
		err := Args{Flag: "containerd-arg", Component: "containerd", Values: tt.values}.Check(fs, refused)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.values, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%q: error %v, want %q", tt.values, err, tt.want)
		}
	}
}
