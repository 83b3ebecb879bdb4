//go:build arm

package pause

import _ "embed"

//go:embed assets/pause-arm.tar
var archive []byte
