package images

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestBesideBinary(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{
		"bin/bramble",
		"bin/bramble-airgap-images-arm.tar.zst",
		"bin/notes.txt",
		"dist/bramble-airgap-images-amd64.tar.zst",
		"dist/bramble-airgap-images-arm64.tar.zst",
		"dist/bramble-airgap-images-armhf.tar.zst",
		"dist/bramble-airgap-images-amd64.tar.zst.sha256",
		"dist/images/amd64/coredns.tar",
	} {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(root, "bin", "bramble"), filepath.Join(root, "bin", "kubectl")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		bin, arch string
		want      []string
	}{
		{"bin/bramble", "amd64", []string{"dist/bramble-airgap-images-amd64.tar.zst"}},
		{"bin/kubectl", "arm64", []string{"dist/bramble-airgap-images-arm64.tar.zst"}},
		{"bin/bramble", "arm", []string{"bin/bramble-airgap-images-arm.tar.zst", "dist/bramble-airgap-images-armhf.tar.zst"}},
		{"bin/bramble", "riscv64", nil},
	} {
		got := BesideBinary(filepath.Join(root, tc.bin), tc.arch)
		var want []string
		for _, w := range tc.want {
			want = append(want, filepath.Join(root, w))
		}
		if !slices.Equal(got, want) {
			t.Errorf("BesideBinary(%s, %s) = %v, want %v", tc.bin, tc.arch, got, want)
		}
	}
	if got := BesideBinary("", "amd64"); got != nil {
		t.Errorf("BesideBinary(\"\") = %v", got)
	}
	if got := AirgapName("arm"); got != "bramble-airgap-images-armhf.tar.zst" {
		t.Errorf("AirgapName(arm) = %s", got)
	}
}
