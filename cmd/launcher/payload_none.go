//go:build !bramble_payload || !(amd64 || arm64 || arm)

package main

// Built without the payload: the launcher says so and exits.
var (
	payload       []byte
	payloadSHA256 string
)
