//go:build bramble_payload && amd64

package main

import _ "embed" // for go:embed

// Written by mk/release.mk (make release).
var (
	//go:embed payload/bramble-amd64.tar.zst
	payload []byte
	//go:embed payload/bramble-amd64.tar.zst.sha256
	payloadSHA256 string
)
