//go:build bramble_assets && arm64

package pause

import _ "embed"

//go:embed assets/pause-arm64.tar
var archive []byte
