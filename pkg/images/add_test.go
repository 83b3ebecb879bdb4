package images

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// TestAdd: Add imports an archive at once, keeps a copy in the directory
// imported at start, and records it so that ImportDir skips it; a file that
// is not an image archive or does not exist is refused and nothing is kept.
func TestAdd(t *testing.T) {
	tc := startContainerd(t)
	ctx := context.Background()
	img := testImage{name: "docker.io/bramble-test/added:v1", file: "a.txt", content: "added\n"}
	src := filepath.Join(t.TempDir(), "added.tar.zst")
	writeFile(t, src, zstdBytes(t, ociArchive(t, img)))
	notArchive := filepath.Join(t.TempDir(), "notes.tar")
	writeFile(t, notArchive, []byte("just some text, not a tar\n"))

	dir := filepath.Join(tc.dir, "images")
	var logs testutil.SyncBuffer
	im := New(tc.client, filepath.Join(tc.dir, "state.json"), newTestLogger(&logs))
	im.Snapshotter = tc.snapshotter

	names, err := im.Add(ctx, src, dir)
	if err != nil || !slices.Equal(names, []string{img.name}) {
		t.Fatalf("Add = %v, %v", names, err)
	}
	tc.checkImage(t, img.name)
	if _, err := os.Stat(filepath.Join(dir, "added.tar.zst")); err != nil {
		t.Errorf("archive not kept: %v", err)
	}
	logs.Reset()
	if err := im.ImportDir(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "imported image archive") {
		t.Errorf("ImportDir imported the added archive again:\n%s", logs.String())
	}
	// Adding the kept copy itself works and leaves it in place.
	if _, err := im.Add(ctx, filepath.Join(dir, "added.tar.zst"), dir); err != nil {
		t.Errorf("Add of the kept copy: %v", err)
	}

	_, err = im.Add(ctx, notArchive, dir)
	if err == nil || !strings.Contains(err.Error(), "not an image archive") || !strings.Contains(err.Error(), notArchive) {
		t.Errorf("Add of a text file: %v", err)
	}
	_, err = im.Add(ctx, filepath.Join(t.TempDir(), "missing.tar"), dir)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Add of a missing file: %v", err)
	}
	_, err = im.Add(ctx, filepath.Join(tc.dir, "state.json"), dir)
	if err == nil || !strings.Contains(err.Error(), "must end in .tar") {
		t.Errorf("Add of a .json file: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%s holds %d entries, want only added.tar.zst", dir, len(entries))
	}
	list, err := List(ctx, tc.client)
	if err != nil || len(list) != 1 || list[0].Name != img.name || list[0].Size <= 0 {
		t.Errorf("List = %+v, %v", list, err)
	}
}

func TestConnectServingNotRunning(t *testing.T) {
	_, err := ConnectServing(context.Background(), filepath.Join(t.TempDir(), "containerd.sock"))
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "start bramble") {
		t.Errorf("err = %v", err)
	}
}
