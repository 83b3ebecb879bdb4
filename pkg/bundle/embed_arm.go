//go:build bramble_assets && arm

package bundle

import _ "embed" // for go:embed

// Produced by scripts/build-helpers.sh (make helpers ARCH=arm).
var (
	//go:embed assets/helpers-arm.tar.zst
	archive []byte
	//go:embed assets/helpers-arm.tar.zst.sha256
	archiveSHA256 string
)
