package server

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/pkg/logging"
	"github.com/bramble-pi/bramble/pkg/nodecreds"
	"github.com/bramble-pi/bramble/pkg/pki"
)

// A server left running renews its certificates by itself: nothing in the
// first months, everything (control plane, admin kubeconfig, its own node)
// once a third of their lifetime is left, and never past a CA.
func TestRenewCertificatesWhileRunning(t *testing.T) {
	cp := testControlPlane(t, func(c *Config) { c.KubeconfigPath = filepath.Join(t.TempDir(), "admin.yaml"); c.KubeconfigMode = 0o600 })
	cp.log = logging.Discard()
	start := time.Now()
	creds, err := EnsureCredentials(cp.cfg, cp.paths, start)
	if err != nil {
		t.Fatal(err)
	}
	cp.creds = creds
	if err := creds.WriteAdminKubeconfig(cp.cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.EnsureNodeCredentials("pi1", net.ParseIP("192.168.1.10"), filepath.Join(cp.cfg.DataDir, "agent")); err != nil {
		t.Fatal(err)
	}
	node := nodecreds.In(filepath.Join(cp.cfg.DataDir, "agent"))
	serial := func(path string) string {
		c, err := pki.ReadCert(path)
		if err != nil {
			t.Fatal(err)
		}
		return c.SerialNumber.String()
	}
	files := []string{creds.ServingCert, creds.AdminCert, creds.KubeletClientCert, node.Cert(nodecreds.KubeletClient), node.ServingCert}
	before := map[string]string{}
	for _, f := range files {
		before[f] = serial(f)
	}
	kubeconfig, _ := os.ReadFile(cp.cfg.KubeconfigPath)

	if err := cp.RenewCertificates(start.Add(30 * 24 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if serial(f) != before[f] {
			t.Errorf("%s renewed after a month", filepath.Base(f))
		}
	}
	later := start.Add(300 * 24 * time.Hour)
	if err := cp.RenewCertificates(later); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if serial(f) == before[f] {
			t.Errorf("%s not renewed after 300 days", filepath.Base(f))
		}
		if c, err := pki.ReadCert(f); err != nil || pki.NeedsRenewal(c, later) {
			t.Errorf("after renewal: %s due again (%v)", filepath.Base(f), err)
		}
	}
	if after, _ := os.ReadFile(cp.cfg.KubeconfigPath); string(after) == string(kubeconfig) {
		t.Error("the admin kubeconfig still holds the old certificate")
	}
}

// certificate rotate moves leaves to a backup; the next start issues new ones
// from the same CAs.
func TestRotateCertificates(t *testing.T) {
	cp := testControlPlane(t, nil)
	creds, err := EnsureCredentials(cp.cfg, cp.paths, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(creds.AdminCert)
	oldServing, _ := os.ReadFile(creds.ServingCert)
	if _, _, err := RotateCertificates(cp.cfg.DataDir, []string{"nope"}, time.Now()); err == nil || !strings.Contains(err.Error(), "admin") {
		t.Errorf("unknown service: %v", err)
	}
	backup, moved, err := RotateCertificates(cp.cfg.DataDir, []string{"admin"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(moved) != 2 {
		t.Errorf("moved %v, want the admin certificate and key", moved)
	}
	if b, err := os.ReadFile(filepath.Join(backup, "server-client-admin.crt")); err != nil || string(b) != string(old) {
		t.Errorf("backup of the admin certificate: %v", err)
	}
	again, err := EnsureCredentials(cp.cfg, cp.paths, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(again.AdminCert); string(now) == string(old) {
		t.Error("admin certificate not issued again")
	}
	if now, _ := os.ReadFile(again.ServingCert); string(now) != string(oldServing) {
		t.Error("a service not asked for was rotated")
	}
	if _, _, err := RotateCertificates(t.TempDir(), nil, time.Now()); err == nil {
		t.Error("rotated in a directory without a server")
	}
}

// A data dir with a cluster's CA but a missing or empty state.db is a
// damaged cluster, not a new one: refused unless --allow-empty-datastore.
func TestDatastoreKept(t *testing.T) {
	cp := testControlPlane(t, nil)
	if err := checkDatastoreKept(cp.cfg, cp.paths); err != nil {
		t.Fatalf("new data dir: %v", err)
	}
	if _, err := EnsureCredentials(cp.cfg, cp.paths, time.Now()); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(cp.paths.DBDir(), "state.db")
	err := checkDatastoreKept(cp.cfg, cp.paths)
	if err == nil || !strings.Contains(err.Error(), db+" is missing") || !strings.Contains(err.Error(), "--allow-empty-datastore") {
		t.Errorf("missing state.db: %v", err)
	}
	if err := os.MkdirAll(cp.paths.DBDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkDatastoreKept(cp.cfg, cp.paths); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty state.db: %v", err)
	}
	allowed := cp.cfg
	allowed.AllowEmptyDatastore = true
	if err := checkDatastoreKept(allowed, cp.paths); err != nil {
		t.Errorf("with --allow-empty-datastore: %v", err)
	}
	if err := os.WriteFile(db, []byte("SQLite format 3\x00..."), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkDatastoreKept(cp.cfg, cp.paths); err != nil {
		t.Errorf("a state.db with content: %v", err)
	}
}
