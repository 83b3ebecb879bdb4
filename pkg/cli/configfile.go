package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/bramble-pi/bramble/pkg/layout"
)

// applyConfigFile fills every flag that was set neither on the command line nor
// through the environment from the YAML file named by --config (keys are flag
// names). Precedence is therefore flag > env > file > default. Unknown keys and
// bad values are errors naming the key, also where a flag or the environment
// overrides the key. The file is shared by every command:
// the helper commands (token, images) skip the keys of server and agent
// flags they do not have.
func applyConfigFile(c *cli.Context) error {
	if err := argsFromEnv(c); err != nil {
		return err
	}
	path := c.String("config")
	values, err := layout.ReadConfigFile(path)
	if err != nil {
		if layout.IsNotExist(err) && !c.IsSet("config") {
			return nil
		}
		return err
	}
	known := flagNames(c.Command.Flags)
	nodeCommand := c.Command.Name == "server" || c.Command.Name == "agent"
	var others map[string]bool
	if !nodeCommand {
		others = flagNames(append(serverFlags(), agentFlags()...))
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if !known[key] && others[key] {
			continue // another command's setting
		}
		if key == "config" || !known[key] {
			msg := fmt.Sprintf("config file %s: unknown key %q", path, key)
			if s := closest(key, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			return errors.New(msg)
		}
		set := c.Set
		if c.IsSet(key) {
			// The command line or the environment wins, but the file's
			// value must still be one: a typo found only when the flag is
			// dropped is a surprise.
			set = checkOnly(c.Command.Flags, key)
		}
		if err := setFromFile(c, key, values[key], set); err != nil {
			return fmt.Errorf("config file %s: key %q: %w", path, key, err)
		}
	}
	return nil
}

// checkOnly returns a setter that parses a value for the flag named key, as
// the flag would, into a copy that nothing reads.
func checkOnly(flags []cli.Flag, key string) func(string, string) error {
	fs := flag.NewFlagSet("config-check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, f := range flags {
		if slices.Contains(f.Names(), key) {
			if g, ok := f.(*cli.GenericFlag); ok {
				// Its Value is the flag's own: check into a new one.
				fresh := *g
				fresh.Value = reflect.New(reflect.TypeOf(g.Value).Elem()).Interface().(cli.Generic)
				f = &fresh
			}
			if err := f.Apply(fs); err != nil {
				return func(string, string) error { return err }
			}
		}
	}
	return fs.Set
}

// setFromFile gives the flag named key the file's value v (each item of a
// list) through set.
func setFromFile(c *cli.Context, key string, v any, set func(name, value string) error) error {
	items, isList := v.([]any)
	if !isList {
		items = []any{v}
	} else if !takesList(c.Command.Flags, key) {
		return fmt.Errorf("want one value, got a list of %d", len(items))
	}
	for _, item := range items {
		switch item.(type) {
		case map[string]any, []any, nil:
			return fmt.Errorf("want a value or a list of values, got %T", item)
		}
		s := fmt.Sprint(item)
		if f, ok := item.(float64); ok && f == float64(int64(f)) {
			s = fmt.Sprint(int64(f))
		}
		if err := set(key, s); err != nil {
			return fmt.Errorf("invalid value %q: %w", s, err)
		}
	}
	return nil
}

// takesList says whether the flag named key may be given more than once (a
// list in the config file).
func takesList(flags []cli.Flag, key string) bool {
	for _, f := range flags {
		if !slices.Contains(f.Names(), key) {
			continue
		}
		switch fl := f.(type) {
		case *cli.StringSliceFlag, *cli.IntSliceFlag:
			return true
		case *cli.GenericFlag:
			_, ok := fl.Value.(*argList)
			return ok
		}
	}
	return false
}

func flagNames(flags []cli.Flag) map[string]bool {
	names := map[string]bool{}
	for _, f := range flags {
		for _, n := range f.Names() {
			if len(n) > 1 {
				names[n] = true
			}
		}
	}
	return names
}

// closest returns the known name nearest to key, if it is near enough.
func closest(key string, known map[string]bool) string {
	best, bestD := "", len(key)/2+2
	for n := range known {
		if d := distance(strings.ToLower(key), n); d < bestD || (d == bestD && n < best) {
			best, bestD = n, d
		}
	}
	return best
}

// distance is the Levenshtein edit distance.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
