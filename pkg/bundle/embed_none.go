//go:build !bramble_assets || !(amd64 || arm64 || arm)

package bundle

// No helper archive in this build: Extract returns ErrNoHelpers.
var (
	archive       []byte
	archiveSHA256 string
)
