// Package pause embeds the pod sandbox ("pause") image built at make time, so
// a node never needs a registry for its sandbox image.
package pause

// Image is the sandbox image's name, as containerd's CRI plugin references it.
const Image = "docker.io/bramble/pause:3.10-bramble"

// Archive is the image as an OCI/docker archive, or nil on a build without it.
func Archive() []byte { return archive }
