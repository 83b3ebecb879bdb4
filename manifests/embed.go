// Package manifests embeds the bundled add-on manifests (one add-on per file).
// They are Go text/template files rendered with .ClusterDNS and .ClusterDomain.
package manifests

import "embed"

// FS holds the bundled *.yaml files.
//
//go:embed *.yaml
var FS embed.FS
