// Package reliability tests that bramble loses nothing it acknowledged: a
// kill -9 of bramble or of its containerd during a stream of writes, a power
// cut (a filesystem shut down without flushing), a full disk, and bad input.
package reliability

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bramble-pi/bramble/tests/testutil"
)

const readyTimeout = 3 * time.Minute

// clientset is a Kubernetes client with the server's admin kubeconfig.
func clientset(t *testing.T, s *testutil.Server) *kubernetes.Clientset {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout = 10 * time.Second
	cfg.QPS, cfg.Burst = 1000, 1000
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// stream creates ConfigMaps from a few goroutines until stopped and records
// each create the apiserver acknowledged (201), with when the answer came.
type stream struct {
	mu     sync.Mutex
	acked  map[string]time.Time
	failed int
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startStream(cs *kubernetes.Clientset, ns, prefix string, workers int) *stream {
	ctx, cancel := context.WithCancel(context.Background())
	st := &stream{acked: map[string]time.Time{}, cancel: cancel}
	for w := 0; w < workers; w++ {
		st.wg.Add(1)
		go func() {
			defer st.wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("%s-%d-%d", prefix, w, i)
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"i": strconv.Itoa(i)}}
				rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := cs.CoreV1().ConfigMaps(ns).Create(rctx, cm, metav1.CreateOptions{})
				rcancel()
				st.mu.Lock()
				if err == nil {
					st.acked[name] = time.Now()
				} else {
					st.failed++
				}
				st.mu.Unlock()
				if err != nil {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	return st
}

// stop ends the stream and returns the names acknowledged before cutoff
// (all of them for a zero cutoff), sorted.
func (st *stream) stop(cutoff time.Time) []string {
	st.cancel()
	st.wg.Wait()
	var names []string
	for name, at := range st.acked {
		if cutoff.IsZero() || at.Before(cutoff) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// missing lists the acknowledged ConfigMaps the apiserver does not have.
func missing(t *testing.T, cs *kubernetes.Clientset, ns string, acked []string) []string {
	t.Helper()
	var list *corev1.ConfigMapList
	testutil.WaitFor(t, time.Minute, "list ConfigMaps", func() bool {
		var err error
		list, err = cs.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{})
		return err == nil
	})
	have := map[string]bool{}
	for _, cm := range list.Items {
		have[cm.Name] = true
	}
	var lost []string
	for _, name := range acked {
		if !have[name] {
			lost = append(lost, name)
		}
	}
	return lost
}

// ensureNamespace creates a namespace (the server may just have started).
func ensureNamespace(t *testing.T, cs *kubernetes.Clientset, ns string) {
	t.Helper()
	testutil.WaitFor(t, time.Minute, "namespace "+ns, func() bool {
		_, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		return err == nil || strings.Contains(err.Error(), "already exists")
	})
}

// killServer sends SIGKILL to the server's whole process group and waits for
// it (a power cut: nothing of bramble runs on).
func killServer(t *testing.T, s *testutil.Server) {
	t.Helper()
	_ = unix.Kill(-s.PID(), unix.SIGKILL)
	if !s.Wait(30 * time.Second) {
		t.Fatal("server survived SIGKILL for 30 s")
	}
}

// loopFS is an ext4 filesystem in a file, on a loop device, mounted at dir.
type loopFS struct {
	t        *testing.T
	img, dir string
	dev      string
}

// newLoopFS makes a filesystem of size MiB mounted at dir (created), and
// unmounts and detaches it when the test ends. Register it before starting
// a server on it: cleanups run last-in first-out, so the server is stopped
// first.
func newLoopFS(t *testing.T, dir string, mib int) *loopFS {
	t.Helper()
	testutil.NeedTools(t, "losetup", "mkfs.ext4", "mount", "umount")
	l := &loopFS{t: t, img: filepath.Join(t.TempDir(), "disk.img"), dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, "truncate", "-s", strconv.Itoa(mib)+"M", l.img)
	// No blocks reserved for root: bramble runs as root, full means full.
	run(t, "mkfs.ext4", "-q", "-F", "-m", "0", l.img)
	l.dev = strings.TrimSpace(run(t, "losetup", "--find", "--show", l.img))
	t.Cleanup(func() {
		l.unmount()
		if out, err := exec.Command("losetup", "--detach", l.dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", l.dev, err, out)
		}
	})
	l.mount()
	return l
}

func (l *loopFS) mount() { run(l.t, "mount", "-t", "ext4", l.dev, l.dir) }

// unmount unmounts the filesystem if mounted, retrying while processes
// that were just killed still hold it.
func (l *loopFS) unmount() {
	for i := 0; ; i++ {
		mounted, err := isMountPoint(l.dir)
		if err != nil || !mounted {
			return
		}
		out, err := exec.Command("umount", l.dir).CombinedOutput()
		if err == nil {
			return
		}
		if i == 50 {
			l.t.Errorf("umount %s: %v: %s (users: %v)", l.dir, err, out, testutil.ProcessesUsing(l.dir))
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func isMountPoint(dir string) (bool, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true, nil
		}
	}
	return false, nil
}

// ext4Shutdown is EXT4_IOC_SHUTDOWN (the same number as XFS_IOC_GOINGDOWN,
// what xfstests' godown uses to simulate a crash): _IOR('X', 125, __u32).
const ext4Shutdown = 0x8004587d

// ext4GoingFlagsNoLogFlush shuts the filesystem down without writing back
// dirty pages or committing the journal: what only sat in the page cache is
// lost, what an fsync put on the device stays. A power cut.
const ext4GoingFlagsNoLogFlush = 2

// powerCut shuts the filesystem down as a power cut would: from then on
// every write fails, and nothing that had not reached the device is written.
func (l *loopFS) powerCut() {
	l.t.Helper()
	f, err := os.Open(l.dir)
	if err != nil {
		l.t.Fatal(err)
	}
	defer f.Close()
	flag := uint32(ext4GoingFlagsNoLogFlush)
	if err := unix.IoctlSetPointerInt(int(f.Fd()), ext4Shutdown, int(flag)); err != nil {
		l.t.Fatalf("EXT4_IOC_SHUTDOWN on %s: %v", l.dir, err)
	}
}

// fill writes a file until the filesystem is full and returns its path.
func (l *loopFS) fill() string {
	l.t.Helper()
	path := filepath.Join(l.dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		l.t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for size := len(buf); size >= 512; {
		if _, err := f.Write(buf[:size]); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				l.t.Fatalf("fill %s: %v", path, err)
			}
			size /= 2
		}
	}
	_ = f.Sync()
	return path
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// checkDB opens a state.db as bramble would after the event (WAL recovery
// included), runs PRAGMA integrity_check and returns the acknowledged
// ConfigMaps of namespace ns it does not hold.
func checkDB(t *testing.T, path, ns string, acked []string) []string {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var result string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&result); err != nil {
		t.Fatalf("%s: integrity_check: %v", path, err)
	}
	if result != "ok" {
		t.Fatalf("%s: integrity_check: %s", path, result)
	}
	have := map[string]bool{}
	rows, err := db.Query(`SELECT name FROM kine WHERE name LIKE ? AND deleted = 0`, "/registry/configmaps/"+ns+"/%")
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		have[strings.TrimPrefix(name, "/registry/configmaps/"+ns+"/")] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var lost []string
	for _, name := range acked {
		if !have[name] {
			lost = append(lost, name)
		}
	}
	return lost
}

func first(names []string, n int) []string {
	if len(names) > n {
		return names[:n]
	}
	return names
}
