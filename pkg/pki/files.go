package pki

import (
	"os"

	"github.com/bramble-pi/bramble/pkg/atomicfile"
)

// WriteSecret writes data to path atomically with mode 0600, creating the
// parent directory with mode 0700.
func WriteSecret(path string, data []byte) error {
	return WriteFile(path, data, 0o600)
}

// WriteFile writes data to path atomically with mode, creating the parent
// directory with mode 0700 (atomicfile.Write).
func WriteFile(path string, data []byte, mode os.FileMode) error {
	return atomicfile.Write(path, data, mode)
}
