package reliability

import (
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// TestPowerCut: the data dir on its own ext4 filesystem (a loop device);
// during a stream of ConfigMap creates the filesystem is shut down without
// flushing anything (EXT4_IOC_SHUTDOWN, NOLOGFLUSH: what sat in the page
// cache is gone, as in a power cut) and bramble killed. The surviving image,
// mounted again (journal replay), holds a database that passes
// integrity_check and has every create acknowledged before the cut; bramble
// starts on it and serves them. Twice, at random points.
func TestPowerCut(t *testing.T) {
	testutil.NeedRoot(t, "loop devices and mounts")
	s := testutil.NewServer(t, "--disable-agent")
	disk := newLoopFS(t, s.DataDir, 256)
	db := filepath.Join(s.DataDir, "server", "db", "state.db")
	var before []string
	for round := 1; round <= 2; round++ {
		s.Start()
		t.Logf("round %d: ready after %s", round, s.WaitReady(readyTimeout))
		cs := clientset(t, s)
		if len(before) > 0 {
			// bramble opened the surviving database and serves what it holds.
			if lost := missing(t, cs, "cut", before); len(lost) > 0 {
				t.Fatalf("round %d: %d acknowledged ConfigMaps not served after the restart, e.g. %v", round, len(lost), first(lost, 5))
			}
		}
		ensureNamespace(t, cs, "cut")
		began := time.Now()
		st := startStream(cs, "cut", "r"+string(rune('0'+round)), 4)
		time.Sleep(time.Duration(1000+rand.IntN(4000)) * time.Millisecond)
		cut := time.Now()
		disk.powerCut()
		killServer(t, s)
		acked := st.stop(cut)
		disk.unmount()
		disk.mount()
		lost := checkDB(t, db, "cut", acked)
		t.Logf("round %d: power cut %s into the stream: %d creates acknowledged before the cut, %d lost; integrity_check ok",
			round, cut.Sub(began).Round(time.Millisecond), len(acked), len(lost))
		if len(acked) == 0 {
			t.Fatalf("round %d: no create was acknowledged before the cut", round)
		}
		if len(lost) > 0 {
			t.Fatalf("round %d: %d of %d acknowledged ConfigMaps lost in the power cut, e.g. %v", round, len(lost), len(acked), first(lost, 5))
		}
		before = append(before, acked...)
	}
	s.Start()
	s.WaitReady(readyTimeout)
	if lost := missing(t, clientset(t, s), "cut", before); len(lost) > 0 {
		t.Fatalf("%d acknowledged ConfigMaps not served after the last cut, e.g. %v", len(lost), first(lost, 5))
	}
	s.Stop(15 * time.Second)
}
