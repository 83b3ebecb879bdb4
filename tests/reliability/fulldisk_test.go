package reliability

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// TestFullDisk: the data dir on a small filesystem, filled to the last block
// while the server runs. Writes are refused with an error, reads keep
// working, bramble stays up, and once the space is freed writes work again
// by themselves; nothing acknowledged is lost and the database passes
// integrity_check. Started on a full disk, bramble stops at once with "no
// space left on device", the file it could not write and what to free.
func TestFullDisk(t *testing.T) {
	testutil.NeedRoot(t, "loop devices and mounts")
	s := testutil.NewServer(t, "--disable-agent")
	disk := newLoopFS(t, s.DataDir, 128)
	s.Start()
	t.Logf("ready after %s", s.WaitReady(readyTimeout))
	cs := clientset(t, s)
	ensureNamespace(t, cs, "full")
	ctx := context.Background()
	// The disk fills once the controller-manager runs: its controllers
	// create their service accounts as they start (a full disk then stops
	// bramble, as any component's failure at start does).
	testutil.WaitServiceAccount(t, s, "full")
	time.Sleep(5 * time.Second)
	value := strings.Repeat("x", 64<<10)
	create := func(name string) error {
		_, err := cs.CoreV1().ConfigMaps("full").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": value}}, metav1.CreateOptions{})
		return err
	}
	var acked []string
	if err := create("before"); err != nil {
		t.Fatal(err)
	}
	acked = append(acked, "before")

	filler := disk.fill()
	// The WAL may still have room for a few commits: write until refused.
	var refusal error
	for i := 0; i < 500 && refusal == nil; i++ {
		name := fmt.Sprintf("full-%d", i)
		if refusal = create(name); refusal == nil {
			acked = append(acked, name)
		}
	}
	if refusal == nil {
		t.Fatal("500 creates of 64 KiB each were accepted on a full disk")
	}
	t.Logf("disk full: %d creates accepted, then refused: %v", len(acked)-1, refusal)
	// An update is refused as clearly, not retried as a conflict until the
	// request times out.
	cm, err := cs.CoreV1().ConfigMaps("full").Get(ctx, "before", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["v"] = "changed on a full disk"
	began := time.Now()
	_, err = cs.CoreV1().ConfigMaps("full").Update(ctx, cm, metav1.UpdateOptions{})
	if err == nil || !strings.Contains(err.Error(), "was not stored") {
		t.Errorf("update on a full disk: want an error saying it was not stored, got %v", err)
	}
	t.Logf("update on a full disk refused after %s: %v", time.Since(began).Round(time.Millisecond), err)
	time.Sleep(5 * time.Second)
	if !s.Running() {
		t.Fatalf("bramble exited on a full disk (status %d)", s.ExitCode())
	}
	if _, err := cs.CoreV1().ConfigMaps("full").Get(ctx, "before", metav1.GetOptions{}); err != nil {
		t.Errorf("read on a full disk: %v", err)
	}
	if lost := missing(t, cs, "full", acked); len(lost) > 0 {
		t.Errorf("on a full disk: acknowledged ConfigMaps not listed: %v", lost)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	began = time.Now()
	testutil.WaitFor(t, time.Minute, "a create once space is free", func() bool { return create("after") == nil })
	t.Logf("space freed: writes accepted again after %s", time.Since(began).Round(100*time.Millisecond))
	acked = append(acked, "after")
	if lost := missing(t, cs, "full", acked); len(lost) > 0 {
		t.Errorf("after the full disk: acknowledged ConfigMaps lost: %v", lost)
	}
	s.Stop(15 * time.Second)
	db := filepath.Join(s.DataDir, "server", "db", "state.db")
	if lost := checkDB(t, db, "full", acked); len(lost) > 0 {
		t.Errorf("state.db lacks acknowledged ConfigMaps: %v", lost)
	}

	// Started on a full disk: one clear error, no loop.
	filler = disk.fill()
	s.Start()
	if !s.Wait(60 * time.Second) {
		t.Fatal("a server started on a full disk still runs after 60 s")
	}
	out := s.Log.String()
	if s.ExitCode() == 0 || !strings.Contains(out, "no space left on device") || !strings.Contains(out, s.DataDir) ||
		!strings.Contains(out, "bramble: the disk is full: free space") {
		t.Errorf("start on a full disk: exit %d, log:\n%s", s.ExitCode(), out)
	}
	t.Logf("start on a full disk: exit %d:\n%s", s.ExitCode(), out)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s.Start()
	s.WaitReady(readyTimeout)
	if lost := missing(t, clientset(t, s), "full", acked); len(lost) > 0 {
		t.Errorf("after a start on a full disk: acknowledged ConfigMaps lost: %v", lost)
	}
	s.Stop(15 * time.Second)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
