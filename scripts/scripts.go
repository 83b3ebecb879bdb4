// Package scripts embeds the shell scripts the bramble binary hands out, so
// there is one copy of each: install.sh writes bramble-killall.sh from the
// binary it just installed (`bramble killall-script`), and the tests run the
// file in this directory.
package scripts

import _ "embed"

// Killall is bramble-killall.sh: stops a node's processes and removes what it
// leaves behind (mounts, interfaces, firewall rules, the run dir).
//
//go:embed bramble-killall.sh
var Killall string
