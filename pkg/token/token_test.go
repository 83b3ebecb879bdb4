package token

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRoundTrip(t *testing.T) {
	hash := CAHash([]byte("ca"))
	tok, err := Parse("K10" + hash + "::server:s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if tok.CAHash != hash || tok.User != "server" || tok.Secret != "s3cret" {
		t.Fatalf("parsed %+v", tok)
	}
	if tok.String() != "K10"+hash+"::server:s3cret" {
		t.Fatalf("String() = %s", tok.String())
	}
	if strings.Contains(tok.Redacted(), "s3cret") {
		t.Fatal("Redacted leaks the secret")
	}
}

func TestParseErrorsDoNotLeakSecret(t *testing.T) {
	for _, in := range []string{"", "K10abc::server:topsecret", "K10" + strings.Repeat("z", 64) + "::server:topsecret", "K10" + strings.Repeat("a", 64) + "::nouser"} {
		_, err := Parse(in)
		if err == nil {
			t.Fatalf("Parse(%q) accepted", in)
		}
		if strings.Contains(err.Error(), "topsecret") {
			t.Fatalf("error leaks secret: %v", err)
		}
	}
}

func TestVerifyCA(t *testing.T) {
	tok := Token{CAHash: CAHash([]byte("good")), User: "server", Secret: "x"}
	if err := tok.VerifyCA([]byte("good")); err != nil {
		t.Fatal(err)
	}
	if err := tok.VerifyCA([]byte("evil")); err == nil || !strings.Contains(err.Error(), "CA hash mismatch") {
		t.Fatalf("mismatch not reported: %v", err)
	}
}

func TestEnsureServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server", "token")
	first, err := EnsureServer(path, []byte("ca"), "")
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("token mode %v, want 0600", st.Mode().Perm())
	}
	again, err := EnsureServer(path, []byte("ca"), "")
	if err != nil || again != first {
		t.Fatalf("restart changed token: %v %v", again, err)
	}
	if _, err := EnsureServer(path, []byte("ca"), "other"); err == nil {
		t.Fatal("a different --token was accepted")
	}
	if _, err := EnsureServer(path, []byte("ca"), first.Secret); err != nil {
		t.Fatalf("same bare secret refused: %v", err)
	}
	given, err := EnsureServer(filepath.Join(t.TempDir(), "token"), []byte("ca"), "mysecret")
	if err != nil || given.Secret != "mysecret" || given.CAHash != CAHash([]byte("ca")) {
		t.Fatalf("given token: %+v %v", given, err)
	}
}

func TestParseBootstrap(t *testing.T) {
	hash := CAHash([]byte("ca"))
	full := "K10" + hash + "::abcdef.0123456789abcdef"
	tok, err := Parse(full)
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Bootstrap || tok.User != "abcdef" || tok.Secret != "0123456789abcdef" || tok.String() != full {
		t.Fatalf("parsed %+v, String() %s", tok, tok.String())
	}
	bare, err := Parse("abcdef.0123456789abcdef")
	if err != nil || !bare.Bootstrap || bare.CAHash != "" || bare.String() != "abcdef.0123456789abcdef" {
		t.Fatalf("bare bootstrap token: %+v, %v", bare, err)
	}
	if _, err := Parse("K10" + hash + "::abcdef.short"); err == nil {
		t.Fatal("malformed bootstrap token accepted")
	}
}

func TestEnsureAgent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent-token")
	if tok, err := EnsureAgent(path, []byte("ca"), ""); err != nil || tok.Secret != "" {
		t.Fatalf("no agent token asked for: %+v, %v", tok, err)
	}
	tok, err := EnsureAgent(path, []byte("ca"), "agentsecret")
	if err != nil || tok.User != AgentUser || tok.Secret != "agentsecret" {
		t.Fatalf("%+v, %v", tok, err)
	}
	again, err := EnsureAgent(path, []byte("ca"), "")
	if err != nil || again.Secret != "agentsecret" {
		t.Fatalf("stored agent token not read back: %+v, %v", again, err)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("agent token file mode: %v, %v", info, err)
	}
}
