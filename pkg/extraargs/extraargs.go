// Package extraargs is the pass-through of a user's flags to a component
// bramble runs (--kube-apiserver-arg, --kube-proxy-arg, ...): values are
// name=value with the leading dashes optional, a flag the user names
// replaces every value bramble generated for it, and a name the component
// does not know is an error that names the bramble flag and the component.
package extraargs

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// Args are the user's values of one pass-through flag.
type Args struct {
	// Flag is the bramble flag they came from, e.g. kube-apiserver-arg.
	Flag string
	// Component is the program that receives them, e.g. kube-apiserver.
	Component string
	// Values are name=value, --name=value or a bare name (a boolean).
	Values []string
}

// Normalized are the values as --name=value (or --name).
func (a Args) Normalized() []string {
	out := make([]string, 0, len(a.Values))
	for _, v := range a.Values {
		out = append(out, "--"+strings.TrimLeft(strings.TrimSpace(v), "-"))
	}
	return out
}

// Names are the flag names the user set, in order, without repeats.
func (a Args) Names() []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range a.Normalized() {
		if n := name(v); !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// Check refuses empty names and names fs (the component's flag set) does not
// have. refused names flags bramble manages itself, with why; nil for none.
func (a Args) Check(fs *pflag.FlagSet, refused map[string]string) error {
	for _, v := range a.Values {
		n := name("--" + strings.TrimLeft(strings.TrimSpace(v), "-"))
		switch {
		case n == "":
			return fmt.Errorf("--%s %q: no flag name (want name=value)", a.Flag, v)
		case refused[n] != "":
			return fmt.Errorf("--%s %q: %s does not take --%s from the user: %s", a.Flag, v, a.Component, n, refused[n])
		case fs != nil && fs.Lookup(n) == nil:
			return fmt.Errorf("--%s %q: %s has no flag --%s", a.Flag, v, a.Component, n)
		}
	}
	return nil
}

// Merge is base (bramble's --name=value arguments) with every flag the user
// set left out, followed by the user's values: the user's replace bramble's,
// and a repeated user flag (a list) keeps all its values.
func (a Args) Merge(base []string) []string {
	user := a.Normalized()
	set := map[string]bool{}
	for _, v := range user {
		set[name(v)] = true
	}
	out := make([]string, 0, len(base)+len(user))
	for _, v := range base {
		if !set[name(v)] {
			out = append(out, v)
		}
	}
	return append(out, user...)
}

// name is the flag name of --name=value.
func name(arg string) string {
	n, _, _ := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
	return n
}
