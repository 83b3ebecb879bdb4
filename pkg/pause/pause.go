// Package pause embeds the pod sandbox ("pause") image built at make time, so
// a node never needs a registry for its sandbox image.
//
// The image (assets/pause-<GOARCH>.tar, made by make) is embedded only with
// the build tag bramble_assets, which the Makefile sets; without it (plain
// `go build ./...` or `go test ./pkg/...` on a fresh clone) Archive is nil.
package pause

// Image is the sandbox image's name, as containerd's CRI plugin references it.
const Image = "docker.io/bramble/pause:3.10-bramble"

// Archive is the image as an OCI/docker archive, or nil on a build without
// it (no tag bramble_assets, or another architecture).
func Archive() []byte { return archive }
