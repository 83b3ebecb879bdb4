package images

import (
	"os"
	"path/filepath"
	"strings"
)

// AirgapPrefix starts the name of the air-gap image tarball a release (and
// `make`) builds: bramble-airgap-images-<arch>.tar.zst.
const AirgapPrefix = "bramble-airgap-images-"

// AirgapName is the air-gap tarball's file name for a Go architecture
// (release names: amd64, arm64, armhf).
func AirgapName(goarch string) string {
	return AirgapPrefix + releaseArch(goarch) + ".tar.zst"
}

func releaseArch(goarch string) string {
	if goarch == "arm" {
		return "armhf"
	}
	return goarch
}

// BesideBinary lists the air-gap image archives for goarch that ship with
// the bramble binary at bin: named bramble-airgap-images-<arch>.tar[.zst|.gz]
// in bin's directory (an air-gapped copy: binary and tarball side by side)
// or in <that directory>/../dist (a build from the repository: bin/bramble
// and dist/). They are imported like <data-dir>/agent/images, so a user
// never copies a tarball by hand. Archives for other architectures are
// ignored.
func BesideBinary(bin, goarch string) []string {
	if bin == "" {
		return nil
	}
	if resolved, err := filepath.EvalSymlinks(bin); err == nil {
		bin = resolved
	}
	dir := filepath.Dir(bin)
	arches := []string{goarch}
	if goarch == "arm" {
		arches = append(arches, "armhf")
	}
	var out []string
	for _, d := range []string{dir, filepath.Join(filepath.Dir(dir), "dist")} {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			name := e.Name()
			if !strings.HasPrefix(name, AirgapPrefix) || !IsArchive(name) {
				continue
			}
			rest := strings.TrimPrefix(name, AirgapPrefix)
			for _, a := range arches {
				if strings.HasPrefix(rest, a+".tar") || strings.HasPrefix(rest, a+".tgz") {
					out = append(out, filepath.Join(d, name))
				}
			}
		}
	}
	return out
}
