package controlplane

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// TestSnapshotSaveRestore: `bramble db snapshot save` while the server
// runs, a deleted ConfigMap, `restore` (refused while the server runs) and
// a restart bring the ConfigMap back; the same snapshot restored into a fresh
// data dir brings the cluster back there too, under its own CA.
func TestSnapshotSaveRestore(t *testing.T) {
	testutil.RequireRoot(t)
	s := testutil.NewServer(t, "--disable-agent")
	noConfig := filepath.Join(filepath.Dir(s.DataDir), "no-config.yaml")
	snapDir := filepath.Join(filepath.Dir(s.DataDir), "snapshots")
	db := func(port int, dataDir string, args ...string) (string, error) {
		full := []string{"db", "snapshot", args[0], "--config", noConfig, "--data-dir", dataDir, "--db-snapshot-dir", snapDir}
		if args[0] == "restore" {
			full = append(full, "--https-listen-port", strconv.Itoa(port))
		}
		full = append(full, args[1:]...)
		return exec(t, full...)
	}
	s.Start()
	t.Logf("ready after %s", s.WaitReady(readyTimeout))
	s.MustKubectl("create", "configmap", "keepme", "--from-literal=k=v1")
	s.MustKubectl("create", "secret", "generic", "hidden", "--from-literal=password=hunter2")

	began := time.Now()
	out, err := db(s.Port, s.DataDir, "save", "--name", "e2e", "--node-name", "pi1")
	if err != nil {
		t.Fatalf("save: %v: %s", err, out)
	}
	t.Logf("save took %s: %s", time.Since(began).Round(time.Millisecond), out)
	out, err = db(s.Port, s.DataDir, "ls")
	if err != nil {
		t.Fatalf("ls: %v: %s", err, out)
	}
	file := regexp.MustCompile(`e2e-pi1-\d+\.db`).FindString(out)
	if file == "" {
		t.Fatalf("ls does not list the snapshot:\n%s", out)
	}
	for _, f := range []string{file, file + ".cred.tar"} {
		if st, err := os.Stat(filepath.Join(snapDir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, err, st)
		}
	}
	s.MustKubectl("delete", "configmap", "keepme")

	if out, err := db(s.Port, s.DataDir, "restore", file); err == nil || !strings.Contains(out, "a server answers on") {
		t.Fatalf("restore while the server runs: err %v: %s", err, out)
	}
	s.Stop(10 * time.Second)
	assertNoProcesses(t, s.DataDir)
	out, err = db(s.Port, s.DataDir, "restore", file)
	if err != nil {
		t.Fatalf("restore: %v: %s", err, out)
	}
	t.Logf("restore: %s", out)
	if !strings.Contains(out, "state.db.before-restore-") {
		t.Errorf("restore did not say where the former database went: %s", out)
	}

	s.Start()
	t.Logf("after restore: ready after %s", s.WaitReady(readyTimeout))
	if got := s.MustKubectl("get", "configmap", "keepme", "-o", "jsonpath={.data.k}"); got != "v1" {
		t.Fatalf("configmap after restore: %q", got)
	}
	s.Stop(10 * time.Second)
	assertNoProcesses(t, s.DataDir)

	// A fresh machine: only the snapshot files.
	fresh := testutil.NewServer(t, "--disable-agent")
	out, err = db(fresh.Port, fresh.DataDir, "restore", file)
	if err != nil {
		t.Fatalf("restore into a fresh data dir: %v: %s", err, out)
	}
	fresh.Start()
	t.Logf("fresh data dir: ready after %s", fresh.WaitReady(readyTimeout))
	if got := fresh.MustKubectl("get", "configmap", "keepme", "-o", "jsonpath={.data.k}"); got != "v1" {
		t.Fatalf("configmap in the fresh data dir: %q", got)
	}
	// Secrets are readable: the encryption key came with the snapshot.
	if got := fresh.MustKubectl("get", "secret", "hidden", "-o", "jsonpath={.data.password}"); got != "aHVudGVyMg==" {
		t.Fatalf("secret in the fresh data dir: %q", got)
	}
	ca1, _ := os.ReadFile(s.CAFile())
	ca2, _ := os.ReadFile(fresh.CAFile())
	if len(ca1) == 0 || string(ca1) != string(ca2) {
		t.Error("the fresh data dir does not have the cluster's CA")
	}
	fresh.Stop(10 * time.Second)
	assertNoProcesses(t, fresh.DataDir)
}
