//go:build !amd64 && !arm64 && !arm

package pause

var archive []byte
