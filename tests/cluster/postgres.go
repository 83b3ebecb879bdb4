package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Postgres is a PostgreSQL server (Debian's postgresql package) the harness
// runs in the switch namespace, on SwitchIP only: the external datastore
// several servers share. Its data lives in a directory of its own, removed
// by Stop.
type Postgres struct {
	Dir      string
	Password string
	proc     Proc
	done     chan struct{}
}

// PostgresPort is where the harness's PostgreSQL listens (on SwitchIP).
const PostgresPort = 5432

// postgresBin is the newest installed PostgreSQL's bin directory.
func postgresBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return va - vb
	})
	if len(dirs) == 0 {
		return "", fmt.Errorf("PostgreSQL is not installed (make test-ha installs Debian's postgresql)")
	}
	return dirs[len(dirs)-1], nil
}

// StartPostgres initialises a database cluster in a new directory (user
// bramble, a random password, scram-sha-256) and starts PostgreSQL in the
// switch namespace on SwitchIP:PostgresPort. The cluster's switch must
// exist (AddNode makes it).
func (c *Cluster) StartPostgres(ctx context.Context) (*Postgres, error) {
	if !netnsExists(c.st.Switch) {
		return nil, fmt.Errorf("postgres: the switch namespace %s does not exist: add a node first", c.st.Switch)
	}
	bin, err := postgresBin()
	if err != nil {
		return nil, err
	}
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	// PostgreSQL refuses to run as root, and its user must reach the
	// directory: not under a root-only test temp dir.
	dir, err := os.MkdirTemp("", "bramble-pg-")
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 12)
	_, _ = rand.Read(secret)
	pg := &Postgres{Dir: dir, Password: hex.EncodeToString(secret), done: make(chan struct{})}
	fail := func(err error) (*Postgres, error) {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(pg.Password+"\n"), 0o600); err != nil {
		return fail(err)
	}
	for _, p := range []string{dir, pwfile} {
		if err := os.Chown(p, uid, gid); err != nil {
			return fail(err)
		}
	}
	asPostgres := []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"}
	initdb := exec.CommandContext(ctx, asPostgres[0], append(asPostgres[1:], filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"),
		"-U", "bramble", "--pwfile", pwfile, "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")...)
	initdb.Env = nodeEnv()
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %w: %s", err, strings.TrimSpace(string(out))))
	}
	os.Remove(pwfile)
	// initdb lets in only local connections: the nodes come over the switch.
	hba, err := os.OpenFile(filepath.Join(dir, "data", "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fail(err)
	}
	_, err = fmt.Fprintf(hba, "host all bramble %s0/24 scram-sha-256\n", SubnetPrefix)
	if cerr := hba.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(err)
	}
	log, err := os.OpenFile(filepath.Join(dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fail(err)
	}
	defer log.Close()
	// `ip netns exec` and setpriv exec: the PID is the postmaster's. The
	// servers' writes stay acknowledged across a bramble kill without
	// fsync (PostgreSQL itself is not killed), which keeps the test quick.
	cmd := exec.Command("ip", append([]string{"netns", "exec", c.st.Switch}, append(asPostgres, filepath.Join(bin, "postgres"),
		"-D", filepath.Join(dir, "data"), "-p", strconv.Itoa(PostgresPort),
		"-c", "listen_addresses="+SwitchIP, "-c", "unix_socket_directories="+dir,
		"-c", "fsync=off", "-c", "max_connections=100")...)...)
	cmd.Env = nodeEnv()
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	done := c.reap(cmd)
	go func() { <-done; close(pg.done) }()
	if pg.proc, err = identify(cmd.Process.Pid); err != nil {
		<-done
		return fail(fmt.Errorf("exited at once: %s", pg.LogTail()))
	}
	dial := DialContext(c.SwitchNetNS())
	for {
		conn, err := dial(ctx, "tcp", pg.Addr())
		if err == nil {
			conn.Close()
			break
		}
		select {
		case <-pg.done:
			return fail(fmt.Errorf("exited: %s", pg.LogTail()))
		case <-ctx.Done():
			pg.Stop()
			return nil, fmt.Errorf("postgres did not listen on %s: %w", pg.Addr(), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	c.cfg.Logf("postgres pid %d listens on %s (data in %s)", pg.proc.PID, pg.Addr(), dir)
	return pg, nil
}

// Addr is host:port.
func (p *Postgres) Addr() string { return fmt.Sprintf("%s:%d", SwitchIP, PostgresPort) }

// Endpoint is the --datastore-endpoint of database db (kine creates it).
func (p *Postgres) Endpoint(db string) string {
	return fmt.Sprintf("postgres://bramble:%s@%s/%s?sslmode=disable", p.Password, p.Addr(), db)
}

// LogTail is the end of PostgreSQL's log.
func (p *Postgres) LogTail() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "postgres.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Stop stops PostgreSQL by its PID (fast shutdown, SIGKILL after 20 s) and
// removes its directory. Safe to call twice.
func (p *Postgres) Stop() error {
	if p == nil {
		return nil
	}
	var err error
	if p.proc.Alive() {
		p.proc.signal(syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			p.proc.signal(syscall.SIGKILL)
			<-p.done
			err = fmt.Errorf("postgres needed SIGKILL")
		}
	}
	if rmErr := os.RemoveAll(p.Dir); rmErr != nil && err == nil {
		err = rmErr
	}
	return err
}
