//go:build bramble_assets && amd64

package bundle

import _ "embed" // for go:embed

// Produced by scripts/build-helpers.sh (make helpers ARCH=amd64).
var (
	//go:embed assets/helpers-amd64.tar.zst
	archive []byte
	//go:embed assets/helpers-amd64.tar.zst.sha256
	archiveSHA256 string
)
