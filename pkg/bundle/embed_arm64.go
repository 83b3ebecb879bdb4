//go:build bramble_assets && arm64

package bundle

import _ "embed" // for go:embed

// Produced by scripts/build-helpers.sh (make helpers ARCH=arm64).
var (
	//go:embed assets/helpers-arm64.tar.zst
	archive []byte
	//go:embed assets/helpers-arm64.tar.zst.sha256
	archiveSHA256 string
)
