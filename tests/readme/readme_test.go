// Package readme tests README's first command as a new user runs it: after
// `make`, `sudo ./bin/bramble server` from the repository, with every
// default (data dir, kubeconfig, ports) and no tarball copied by hand, ends
// with `odd` from the Plumber API through the ingress, and CoreDNS answers.
// It also checks that a node without the bundled images says so, with the fix.
package readme

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/pkg/images"
	"github.com/bramble-pi/bramble/tests/testutil"
)

// The README's defaults.
const (
	dataDir    = "/var/lib/bramble"
	kubeconfig = "/etc/bramble/bramble.yaml"
	configFile = "/etc/bramble/config.yaml"
	clusterDNS = "10.43.0.10:53"
)

func TestReadmeServer(t *testing.T) {
	testutil.RequireRoot(t)
	root := testutil.RepoRoot(t)
	// The test uses the real default paths: it refuses to run over a
	// cluster someone has on this machine.
	for _, p := range []string{dataDir, kubeconfig, configFile} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s exists: this test runs `./bin/bramble server` with the README's defaults and will not touch an existing cluster; remove it (bramble-killall.sh, then rm -rf %s /etc/bramble) to run it", p, dataDir)
		}
	}
	for _, port := range []int{6443, 80} {
		if l, err := net.Listen("tcp", fmt.Sprintf(":%d", port)); err != nil {
			t.Fatalf("port %d is in use: README's server needs it: %v", port, err)
		} else {
			l.Close()
		}
	}
	// What `make` leaves: bin/bramble and this arch's air-gap tarball in dist/.
	tarball := filepath.Join(root, "dist", "bramble-airgap-images-"+testutil.Arch()+".tar.zst")
	if _, err := os.Stat(tarball); err != nil {
		t.Fatalf("`make` did not build %s: %v", tarball, err)
	}
	_, etcExisted := os.Stat("/etc/bramble")

	s := &testutil.Server{DataDir: dataDir, Kubeconfig: kubeconfig, Port: 6443,
		Args: []string{"server"}, Command: "./bin/bramble", Dir: root}
	s.SetT(t)
	testutil.CleanupNode(t, s)
	t.Cleanup(func() {
		if err := os.RemoveAll(dataDir); err != nil {
			t.Errorf("remove %s: %v", dataDir, err)
		}
		if etcExisted != nil {
			_ = os.RemoveAll("/etc/bramble")
		} else {
			_ = os.Remove(kubeconfig)
		}
	})
	begin := time.Now()
	s.Start()
	s.WaitReady(3 * time.Minute)
	t.Logf("apiserver ready %.1f s after start", time.Since(begin).Seconds())

	testutil.WaitFor(t, 5*time.Minute, "odd from http://localhost/parity?int=15", func() bool {
		code, body := testutil.Get("http://localhost/parity?int=15")
		return code == 200 && strings.TrimSpace(body) == "odd"
	})
	t.Logf("first odd %.1f s after `./bin/bramble server`", time.Since(begin).Seconds())
	if !strings.Contains(s.Log.String(), "imported image archive") || !strings.Contains(s.Log.String(), filepath.Base(tarball)) {
		t.Errorf("the log does not show %s imported", filepath.Base(tarball))
	}

	// CoreDNS, at the cluster DNS address, resolves a Service name.
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, clusterDNS)
	}}
	var addrs []string
	testutil.WaitFor(t, time.Minute, "CoreDNS resolves plumber-api.plumber.svc.cluster.local", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var err error
		addrs, err = r.LookupHost(ctx, "plumber-api.plumber.svc.cluster.local")
		return err == nil && len(addrs) > 0
	})
	svcIP := s.MustKubectl("-n", "plumber", "get", "service", "plumber-api", "-o", "jsonpath={.spec.clusterIP}")
	if addrs[0] != svcIP {
		t.Errorf("CoreDNS answered %v for the Plumber Service, its ClusterIP is %s", addrs, svcIP)
	}

	// Nothing missing, and the Addons say so.
	out := s.MustKubectl("-n", "kube-system", "get", "addons", "-o", "custom-columns=NAME:.metadata.name,IMAGES:.status.images", "--no-headers")
	for _, line := range strings.Split(out, "\n") {
		// local-storage is a StorageClass: no images, nothing recorded.
		want := "present"
		if strings.HasPrefix(line, "local-storage ") {
			want = "<none>"
		}
		if !strings.HasSuffix(strings.TrimSpace(line), want) {
			t.Errorf("Addon images not %s: %q", want, line)
		}
	}
	if strings.Contains(s.Log.String(), "images are missing") {
		t.Errorf("missing-image warning although the tarball was found")
	}
}

// A node without the bundled images (no tarball anywhere) says which ones
// are missing and where the file that has them goes, once, in the log and
// in the Addon's status.
func TestMissingImagesWarning(t *testing.T) {
	testutil.RequireRoot(t)
	// The taint keeps CoreDNS unscheduled: its pod would try a registry.
	s := testutil.NewServer(t, "--disable", "traefik,plumber-api", "--node-taint", "bramble.test/no-pull=true:NoSchedule")
	testutil.CleanupNode(t, s)
	s.Start()
	s.WaitReady(3 * time.Minute)
	const image = "docker.io/bramble/coredns:"
	name := images.AirgapName(testutil.Arch())
	var status string
	testutil.WaitFor(t, 2*time.Minute, "the coredns Addon records its missing image", func() bool {
		status, _ = s.Kubectl("-n", "kube-system", "get", "addon", "coredns", "-o", "jsonpath={.status.images}")
		return strings.HasPrefix(status, "missing: "+image)
	})
	if !strings.Contains(status, name) || !strings.Contains(status, filepath.Join(s.DataDir, "agent", "images")) {
		t.Errorf("Addon status does not say where the tarball goes: %q", status)
	}
	log := s.Log.String()
	var warning string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "bundled add-on images are missing") {
			if warning != "" {
				t.Errorf("warning logged more than once:\n%s\n%s", warning, line)
			}
			warning = line
		}
	}
	t.Logf("warning: %s", warning)
	for _, want := range []string{"WARN", image, name, filepath.Join(s.DataDir, "agent", "images"), "bramble images import"} {
		if !strings.Contains(warning, want) {
			t.Errorf("the warning lacks %q", want)
		}
	}
	// kubectl get addons shows it in a column.
	if out := s.MustKubectl("-n", "kube-system", "get", "addons"); !strings.Contains(out, "IMAGES") || !strings.Contains(out, "missing: "+image) {
		t.Errorf("kubectl get addons does not show the missing image:\n%s", out)
	}
}
