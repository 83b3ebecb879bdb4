//go:build bramble_payload && arm64

package main

import _ "embed" // for go:embed

// Written by mk/release.mk (make release).
var (
	//go:embed payload/bramble-arm64.tar.zst
	payload []byte
	//go:embed payload/bramble-arm64.tar.zst.sha256
	payloadSHA256 string
)
