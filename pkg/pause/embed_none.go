//go:build !bramble_assets || !(amd64 || arm64 || arm)

package pause

// No pause image in this build: Archive returns nil.
var archive []byte
