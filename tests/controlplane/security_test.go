package controlplane

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

// storedSecrets are the latest raw values of every Secret in state.db, by
// key (/registry/secrets/<ns>/<name>).
func storedSecrets(t *testing.T, dataDir string) map[string][]byte {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dataDir, "server", "db", "state.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT kv.name, kv.value FROM kine AS kv
		JOIN (SELECT MAX(id) AS id FROM kine WHERE name LIKE '/registry/secrets/%' GROUP BY name) AS latest ON kv.id = latest.id
		WHERE kv.deleted = 0`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var name string
		var value []byte
		if err := rows.Scan(&name, &value); err != nil {
			t.Fatal(err)
		}
		out[name] = value
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// assertAbsentFromDB fails when any of the database files holds needle.
func assertAbsentFromDB(t *testing.T, dataDir string, needles ...string) {
	t.Helper()
	seen := 0
	for _, f := range []string{"state.db", "state.db-wal", "state.db-shm"} {
		data, err := os.ReadFile(filepath.Join(dataDir, "server", "db", f))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		seen++
		for _, n := range needles {
			if bytes.Contains(data, []byte(n)) {
				t.Errorf("%s holds %q in clear text", f, n)
			}
		}
	}
	if seen == 0 {
		t.Fatal("no database files")
	}
}

// secretValues reads every Secret through the API: namespace/name -> data.
func secretValues(t *testing.T, s *testutil.Server) map[string]map[string]string {
	t.Helper()
	var list struct {
		Items []struct {
			Metadata struct{ Namespace, Name string }
			Data     map[string]string
		}
	}
	if err := json.Unmarshal([]byte(s.MustKubectl("get", "secrets", "-A", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, it := range list.Items {
		m := map[string]string{}
		for k, v := range it.Data {
			plain, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				t.Fatal(err)
			}
			m[k] = string(plain)
		}
		out[it.Metadata.Namespace+"/"+it.Metadata.Name] = m
	}
	return out
}

func randomWord(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Secrets are encrypted at rest by default: readable through the API,
// absent from the SQLite files; `bramble secrets-encrypt rotate-keys`
// re-encrypts every Secret with a new key while the server runs.
func TestSecretsEncryptedAtRest(t *testing.T) {
	testutil.RequireRoot(t)
	s := testutil.NewServer(t, "--disable-agent")
	s.Start()
	s.WaitReady(readyTimeout)
	noConfig := filepath.Join(filepath.Dir(s.DataDir), "no-config.yaml")
	// rotate-keys waits twice for the apiserver to re-read the file, which
	// it does every 5 s (secretsenc.ReloadPoll).
	tool := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		raw, err := osexec.CommandContext(ctx, testutil.Binary(t), append(args, "--data-dir", s.DataDir, "--config", noConfig)...).CombinedOutput()
		out := strings.TrimSpace(string(raw))
		if err != nil {
			t.Fatalf("bramble %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	cfgFile := filepath.Join(s.DataDir, "server", "cred", "encryption-config.yaml")
	if st, err := os.Stat(cfgFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("encryption config: %v (mode %v), want 0600", err, st.Mode())
	}

	values := map[string]string{}
	s.MustKubectl("create", "namespace", "vault")
	for _, name := range []string{"db", "api", "mail"} {
		values[name] = "bramble-secret-" + randomWord(t)
		s.MustKubectl("-n", "vault", "create", "secret", "generic", name, "--from-literal=password="+values[name])
	}
	got := secretValues(t, s)
	for name, v := range values {
		if got["vault/"+name]["password"] != v {
			t.Fatalf("vault/%s through the API: %q, want %q", name, got["vault/"+name]["password"], v)
		}
	}
	var needles []string
	for _, v := range values {
		needles = append(needles, v, base64.StdEncoding.EncodeToString([]byte(v)))
	}
	assertAbsentFromDB(t, s.DataDir, needles...)
	stored := storedSecrets(t, s.DataDir)
	for name := range values {
		v := stored["/registry/secrets/vault/"+name]
		if !bytes.HasPrefix(v, []byte("k8s:enc:secretbox:v1:key-1:")) {
			t.Errorf("vault/%s is stored as %q...", name, v[:min(len(v), 30)])
		}
	}
	out := tool("secrets-encrypt", "status")
	t.Logf("status:\n%s", out)
	for _, want := range []string{"Encryption: on (secretbox)", "Write key: key-1", "Keys: 1", "Apiserver: uses this file"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q", want)
		}
	}

	// Rotate while the server serves: every Secret (the service-account
	// and bootstrap ones too) ends up under key-2 and reads back.
	begin := time.Now()
	out = tool("secrets-encrypt", "rotate-keys")
	t.Logf("rotate-keys took %s:\n%s", time.Since(begin).Round(time.Second), out)
	for _, want := range []string{"Write key: key-2", "Keys: 1 (key-2)", "Apiserver: uses this file"} {
		if !strings.Contains(out, want) {
			t.Errorf("rotate-keys output lacks %q", want)
		}
	}
	if strings.Contains(out, "Not all Secrets") {
		t.Error("secrets left under the old key")
	}
	stored = storedSecrets(t, s.DataDir)
	if len(stored) < len(values) {
		t.Fatalf("%d Secrets stored", len(stored))
	}
	for key, v := range stored {
		if !bytes.HasPrefix(v, []byte("k8s:enc:secretbox:v1:key-2:")) {
			t.Errorf("%s is stored as %q... after the rotation", key, v[:min(len(v), 30)])
		}
	}
	got = secretValues(t, s)
	if len(got) != len(stored) {
		t.Errorf("%d Secrets through the API, %d stored", len(got), len(stored))
	}
	for name, v := range values {
		if got["vault/"+name]["password"] != v {
			t.Errorf("vault/%s after the rotation: %q", name, got["vault/"+name]["password"])
		}
	}
	// The key itself is never logged.
	cfg, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(cfg), "\n") {
		if secret, ok := strings.CutPrefix(strings.TrimSpace(line), "secret: "); ok && (strings.Contains(s.Log.String(), secret) || strings.Contains(out, secret)) {
			t.Error("a key was logged")
		}
	}

	// A restart reads everything with the rotated file.
	s.Stop(10 * time.Second)
	s.Start()
	s.WaitReady(readyTimeout)
	if v := s.MustKubectl("-n", "vault", "get", "secret", "db", "-o", "jsonpath={.data.password}"); v != base64.StdEncoding.EncodeToString([]byte(values["db"])) {
		t.Errorf("after a restart: %q", v)
	}
	s.Stop(10 * time.Second)
	assertAbsentFromDB(t, s.DataDir, needles...)
}

// Flags reach the control plane through --kube-apiserver-arg (here from the
// config file) and the other pass-through flags; --audit-log logs metadata
// only.
func TestPassThroughArgsAndAuditLog(t *testing.T) {
	testutil.RequireRoot(t)
	audit := filepath.Join(t.TempDir(), "audit.log")
	s := testutil.NewServer(t, "--disable-agent", "--audit-log", audit,
		"--kube-scheduler-arg=v=0", "--kube-controller-manager-arg=terminated-pod-gc-threshold=100")
	noConfig := filepath.Join(filepath.Dir(s.DataDir), "no-config.yaml")
	if err := os.WriteFile(noConfig, []byte("kube-apiserver-arg:\n  - service-node-port-range=20000-22767\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Start()
	s.WaitReady(readyTimeout)

	svc := func(name string, port int) (string, error) {
		return s.Kubectl("create", "service", "nodeport", name, "--tcp=80:80", "--node-port="+itoa(port))
	}
	if out, err := svc("low", 20080); err != nil {
		t.Fatalf("a NodePort in the passed range was refused: %v\n%s", err, out)
	}
	if out, err := svc("default-range", 30080); err == nil || !strings.Contains(out, "provided port is not in the valid range") {
		t.Errorf("a NodePort outside the passed range: %v\n%s", err, out)
	}

	secret := "audit-me-" + randomWord(t)
	s.MustKubectl("create", "secret", "generic", "audited", "--from-literal=password="+secret)
	testutil.WaitFor(t, 30*time.Second, "the audit log records the Secret's creation", func() bool {
		data, _ := os.ReadFile(audit)
		return bytes.Contains(data, []byte(`"resource":"secrets"`)) && bytes.Contains(data, []byte(`"name":"audited"`))
	})
	data, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{secret, base64.StdEncoding.EncodeToString([]byte(secret)), `"requestObject"`, `"responseObject"`, `"resource":"leases"`, `"resource":"events"`, `"/readyz"`} {
		if bytes.Contains(data, []byte(bad)) {
			t.Errorf("the audit log holds %s", bad)
		}
	}
	if !bytes.Contains(data, []byte(`"level":"Metadata"`)) {
		t.Error("no Metadata events")
	}
	if st, err := os.Stat(filepath.Join(s.DataDir, "server", "etc", "audit-policy.yaml")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("audit policy: %v", err)
	}
	t.Logf("audit log: %d bytes", len(data))
	s.Stop(10 * time.Second)
}

// A flag a component does not have stops the server at once, naming the
// bramble flag and the component, before anything is written.
func TestPassThroughUnknownFlag(t *testing.T) {
	dir := t.TempDir()
	noConfig := filepath.Join(dir, "no-config.yaml")
	if err := os.WriteFile(noConfig, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ flag, want string }{
		{"--kube-apiserver-arg=no-such-flag=1", `--kube-apiserver-arg "no-such-flag=1": kube-apiserver has no flag --no-such-flag`},
		{"--kube-controller-manager-arg=node-monitor-period=soon", `--kube-controller-manager-arg: kube-controller-manager arguments: invalid argument "soon"`},
		{"--kube-scheduler-arg=--bogus", `kube-scheduler has no flag --bogus`},
	} {
		begin := time.Now()
		out, err := exec(t, "server", "--disable-agent", "--config", noConfig, "--data-dir", filepath.Join(dir, "data"),
			"--https-listen-port", itoa(testutil.FreePort(t)), tc.flag)
		if err == nil {
			t.Fatalf("%s: the server started", tc.flag)
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("%s: output %q lacks %q", tc.flag, out, tc.want)
		}
		t.Logf("%s: refused after %s", tc.flag, time.Since(begin).Round(time.Millisecond))
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Error("a refused flag still created the data dir")
	}
}

// With --secrets-encryption=false there is no key and a Secret's value is in
// the database files: the check above would see it.
func TestSecretsEncryptionOff(t *testing.T) {
	testutil.RequireRoot(t)
	s := testutil.NewServer(t, "--disable-agent", "--secrets-encryption=false")
	s.Start()
	s.WaitReady(readyTimeout)
	value := "bramble-clear-" + randomWord(t)
	s.MustKubectl("create", "secret", "generic", "plain", "--from-literal=password="+value)
	if _, err := os.Stat(filepath.Join(s.DataDir, "server", "cred", "encryption-config.yaml")); err == nil {
		t.Error("an encryption config was written")
	}
	testutil.WaitFor(t, 30*time.Second, "the value reaches the database files", func() bool {
		for _, f := range []string{"state.db", "state.db-wal"} {
			data, _ := os.ReadFile(filepath.Join(s.DataDir, "server", "db", f))
			if bytes.Contains(data, []byte(value)) {
				return true
			}
		}
		return false
	})
	s.Stop(10 * time.Second)
}
