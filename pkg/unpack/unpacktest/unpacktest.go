// Package unpacktest builds small archives in the format package unpack installs.
package unpacktest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// Entry is one tar entry: for a symlink, Body is the link target.
type Entry struct {
	Name string
	Type byte
	Body string
}

// File is a regular file entry.
func File(name, body string) Entry { return Entry{name, tar.TypeReg, body} }

// Archive returns a zstd-compressed tar of entries (mode 0755) and its hex sha256.
func Archive(t testing.TB, entries ...Entry) ([]byte, string) {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.Name, Typeflag: e.Type, Mode: 0o755, Size: int64(len(e.Body))}
		if e.Type == tar.TypeSymlink || e.Type == tar.TypeDir {
			hdr.Linkname, hdr.Size = e.Body, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			if _, err := tw.Write([]byte(e.Body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	data := enc.EncodeAll(tb.Bytes(), nil)
	sum := sha256.Sum256(data)
	return data, hex.EncodeToString(sum[:])
}
