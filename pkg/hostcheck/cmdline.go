package hostcheck

import (
	"slices"
	"strings"
)

// Kernel command line words that turn the memory cgroup controller on, on a
// Raspberry Pi kernel (whose firmware adds cgroup_disable=memory).
const (
	CmdlineMemory       = "cgroup_memory=1"
	CmdlineEnableMemory = "cgroup_enable=memory"
	// CmdlineMemoryFix is what to add to cmdline.txt.
	CmdlineMemoryFix = CmdlineMemory + " " + CmdlineEnableMemory
)

// CmdlineFix adds `cgroup_memory=1 cgroup_enable=memory` to a Raspberry Pi
// cmdline.txt line and removes memory from any cgroup_disable= word (and any
// other cgroup_memory= value). Other words keep their order; when a change is
// made, words are separated by single spaces. Words after a "--" (arguments
// for init) stay after it, the new words go before it.
//
// cmdline.txt must be a single line: only the text before the first newline
// is edited, the rest (normally just the newline) is kept as it is. A
// trailing carriage return is kept too.
//
// It is idempotent: when nothing needs to change, line is returned unchanged
// and changed is false.
func CmdlineFix(line string) (fixed string, changed bool) {
	first, rest, hasNewline := strings.Cut(line, "\n")
	cr := ""
	if strings.HasSuffix(first, "\r") {
		first, cr = strings.TrimSuffix(first, "\r"), "\r"
	}

	words := strings.Fields(first)
	var initArgs []string
	if i := slices.Index(words, "--"); i >= 0 {
		words, initArgs = words[:i], words[i:]
	}

	var (
		out       = make([]string, 0, len(words)+2)
		hasMemory bool
		hasEnable bool
	)
	for _, w := range words {
		key, value, _ := strings.Cut(w, "=")
		switch key {
		case "cgroup_memory":
			if value != "1" {
				changed = true
				continue
			}
			hasMemory = true
		case "cgroup_disable":
			list := strings.Split(value, ",")
			kept := slices.DeleteFunc(slices.Clone(list), func(s string) bool { return s == "memory" })
			if len(kept) != len(list) {
				changed = true
				if len(kept) == 0 || (len(kept) == 1 && kept[0] == "") {
					continue
				}
				w = key + "=" + strings.Join(kept, ",")
			}
		case "cgroup_enable":
			if slices.Contains(strings.Split(value, ","), "memory") {
				hasEnable = true
			}
		}
		out = append(out, w)
	}
	if !hasMemory {
		out = append(out, CmdlineMemory)
		changed = true
	}
	if !hasEnable {
		out = append(out, CmdlineEnableMemory)
		changed = true
	}
	if !changed {
		return line, false
	}
	out = append(out, initArgs...)

	fixed = strings.Join(out, " ") + cr
	if hasNewline {
		fixed += "\n" + rest
	}
	return fixed, true
}

// cmdlineDisables reports whether a kernel command line has a
// cgroup_disable= word that lists controller.
func cmdlineDisables(cmdline, controller string) bool {
	for _, w := range strings.Fields(cmdline) {
		if w == "--" {
			break
		}
		if value, ok := strings.CutPrefix(w, "cgroup_disable="); ok &&
			slices.Contains(strings.Split(value, ","), controller) {
			return true
		}
	}
	return false
}
