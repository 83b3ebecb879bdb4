//go:build bramble_assets && arm

package pause

import _ "embed"

//go:embed assets/pause-arm.tar
var archive []byte
