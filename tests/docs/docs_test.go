// Package docs keeps docs/ARCHITECTURE.md true: its package dependency list
// must name every bramble package and exactly the bramble packages each one
// imports.
package docs

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/bramble-pi/bramble/tests/testutil"
)

const module = "github.com/bramble-pi/bramble/"

func TestArchitectureDependencies(t *testing.T) {
	root := testutil.RepoRoot(t)
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}", "./pkg/...", "./cmd/...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(l, "|")
		var deps []string
		for _, imp := range strings.Fields(imports) {
			if strings.HasPrefix(imp, module) {
				deps = append(deps, strings.TrimPrefix(imp, module))
			}
		}
		sort.Strings(deps)
		arrow := strings.TrimPrefix(pkg, module) + " ->"
		if len(deps) > 0 {
			arrow += " " + strings.Join(deps, ", ")
		}
		lines = append(lines, arrow)
	}
	sort.Strings(lines)
	want := "```\n" + strings.Join(lines, "\n") + "\n```"

	doc, err := os.ReadFile(filepath.Join(root, "docs", "ARCHITECTURE.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- deps:begin -->\n")
	block, _, ok2 := strings.Cut(rest, "\n<!-- deps:end -->")
	if !ok || !ok2 {
		t.Fatal("docs/ARCHITECTURE.md has no <!-- deps:begin --> ... <!-- deps:end --> block")
	}
	if strings.TrimSpace(block) != want {
		t.Errorf("docs/ARCHITECTURE.md's package dependencies are out of date; the code says:\n%s", want)
	}
	// Dependencies point one way.
	for _, l := range lines {
		if strings.HasPrefix(l, "pkg/join ->") || strings.HasPrefix(l, "pkg/server ->") {
			if strings.Contains(l, "pkg/agent") {
				t.Errorf("%s: the join protocol and the control plane must not import the node", l)
			}
		}
		if _, deps, _ := strings.Cut(l, "->"); strings.Contains(deps, "pkg/cli") && !strings.HasPrefix(l, "cmd/bramble ->") {
			t.Errorf("%s: nothing but cmd/bramble imports the command layer", l)
		}
	}
}
