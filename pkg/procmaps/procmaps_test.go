package procmaps

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "maps")
	content := `00400000-00403000 r--p 00000000 08:01 12 /usr/bin/bramble
00403000-054b7000 r-xp 00003000 08:01 12 /usr/bin/bramble
0b241000-0cfc4000 rw-p 0ae41000 08:01 12 /usr/bin/bramble
7f0000002000-7f0000003000 rw-p 00000000 00:00 0
`
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{
		{0x400000, 0x403000, "r--p", "/usr/bin/bramble"},
		{0x403000, 0x54b7000, "r-xp", "/usr/bin/bramble"},
		{0xb241000, 0xcfc4000, "rw-p", "/usr/bin/bramble"},
		{0x7f0000002000, 0x7f0000003000, "rw-p", ""},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mappings, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if !got[2].Writable() || got[1].Writable() {
		t.Error("Writable: rw-p is, r-xp is not")
	}
	if err := os.WriteFile(p, []byte("zz-00 r--p 0 0:0 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(p); err == nil {
		t.Error("bad range: want an error")
	}
}

func TestReadSelf(t *testing.T) {
	m, err := Read(0)
	if err != nil || len(m) == 0 {
		t.Fatalf("own mappings: %v, %d", err, len(m))
	}
}
