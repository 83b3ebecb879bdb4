//go:build bramble_assets && amd64

package pause

import _ "embed"

//go:embed assets/pause-amd64.tar
var archive []byte
