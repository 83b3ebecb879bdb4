// Package deploy tests the add-on controller against a real control plane:
// user manifests applied, re-applied, pruned and removed; malformed files
// reported by event without blocking others; bundled add-ons disabled; an
// edited Addon.status cannot have other objects deleted; Traefik's service
// account sees only the TLS Secrets that Ingresses reference.
package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/tests/testutil"
)

const userManifest = `apiVersion: v1
kind: Namespace
metadata:
  name: user-app
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: user-app
data:
  color: %s
`

const extraConfigMap = `---
apiVersion: v1
kind: ConfigMap
metadata:
  name: extra
  namespace: user-app
data:
  a: b
`

func TestManifestsDirectory(t *testing.T) {
	testutil.RequireRoot(t)
	s := testutil.NewServer(t, "--disable-agent")
	s.Start()
	s.WaitReady(2 * time.Minute)
	dir := filepath.Join(s.DataDir, "server", "manifests")

	// Bundled add-ons are written and applied.
	for _, name := range []string{"coredns", "traefik", "plumber-api"} {
		testutil.WaitFor(t, 30*time.Second, "bundled "+name+" written", func() bool {
			_, err := os.Stat(filepath.Join(dir, name+".yaml"))
			return err == nil
		})
	}
	testutil.WaitFor(t, 60*time.Second, "kube-dns service at the cluster DNS IP", func() bool {
		out, _ := s.Kubectl("-n", "kube-system", "get", "service", "kube-dns", "-o", "jsonpath={.spec.clusterIP}")
		return out == "10.43.0.10"
	})
	testutil.WaitFor(t, 30*time.Second, "plumber-api deployment", func() bool {
		out, _ := s.Kubectl("-n", "plumber", "get", "deployment", "plumber-api", "-o", "name")
		return out == "deployment.apps/plumber-api"
	})

	// A user manifest: applied, then edited, then an object removed, then the file removed.
	write(t, filepath.Join(dir, "user.yaml"), strings.Replace(userManifest, "%s", "red", 1)+extraConfigMap)
	testutil.WaitFor(t, 30*time.Second, "user manifest applied", func() bool {
		out, _ := s.Kubectl("-n", "user-app", "get", "configmap", "settings", "-o", "jsonpath={.data.color}")
		return out == "red"
	})
	write(t, filepath.Join(dir, "user.yaml"), strings.Replace(userManifest, "%s", "blue", 1))
	testutil.WaitFor(t, 30*time.Second, "edited manifest re-applied", func() bool {
		out, _ := s.Kubectl("-n", "user-app", "get", "configmap", "settings", "-o", "jsonpath={.data.color}")
		return out == "blue"
	})
	testutil.WaitFor(t, 30*time.Second, "object dropped from the file is deleted", func() bool {
		_, err := s.Kubectl("-n", "user-app", "get", "configmap", "extra")
		return err != nil
	})
	if out := s.MustKubectl("-n", "kube-system", "get", "addon", "user", "-o", "jsonpath={.status.applied}"); out != "true" {
		t.Errorf("Addon user applied = %q", out)
	}

	// A malformed file: an event naming it; the other files still applied.
	write(t, filepath.Join(dir, "broken.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n")
	write(t, filepath.Join(dir, "after-broken.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: still-applied\n  namespace: default\ndata:\n  ok: \"yes\"\n")
	testutil.WaitFor(t, 30*time.Second, "event for the malformed file", func() bool {
		out, _ := s.Kubectl("-n", "kube-system", "get", "events", "--field-selector", "involvedObject.name=broken", "-o", "jsonpath={.items[*].message}")
		return strings.Contains(out, "broken.yaml") && strings.Contains(out, "malformed")
	})
	testutil.WaitFor(t, 30*time.Second, "a good file next to a broken one is applied", func() bool {
		_, err := s.Kubectl("get", "configmap", "still-applied")
		return err == nil
	})
	if !strings.Contains(s.Log.String(), "broken.yaml") {
		t.Error("no log line names broken.yaml")
	}
	// An object the apiserver rejects: the event names file and object.
	write(t, filepath.Join(dir, "bad-object.yaml"), "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad-svc\n  namespace: default\nspec:\n  ports:\n  - port: 99999\n")
	testutil.WaitFor(t, 30*time.Second, "event naming the rejected object", func() bool {
		out, _ := s.Kubectl("-n", "kube-system", "get", "events", "--field-selector", "involvedObject.name=bad-object", "-o", "jsonpath={.items[*].message}")
		return strings.Contains(out, "bad-object.yaml") && strings.Contains(out, "Service default/bad-svc")
	})

	if err := os.Remove(filepath.Join(dir, "user.yaml")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, "a removed file's objects are deleted", func() bool {
		_, err1 := s.Kubectl("-n", "user-app", "get", "configmap", "settings")
		out, _ := s.Kubectl("get", "namespace", "user-app", "-o", "jsonpath={.status.phase}")
		return err1 != nil && (out == "" || out == "Terminating")
	})

	checkTraefikSecrets(t, s)

	// An Addon whose status was edited to list other objects: only its own
	// are deleted when its file goes (here while the server is down).
	foreign := prepareForeignObjects(t, s, dir)

	// --disable plumber-api on restart removes the Plumber API.
	s.Stop(15 * time.Second)
	if err := os.Remove(filepath.Join(dir, "victim.yaml")); err != nil {
		t.Fatal(err)
	}
	s.Args = append(s.Args, "--disable", "plumber-api")
	s.Start()
	s.WaitReady(2 * time.Minute)
	checkForeignObjectsKept(t, s, foreign)
	testutil.WaitFor(t, 60*time.Second, "disabled plumber-api removed", func() bool {
		_, err := s.Kubectl("-n", "plumber", "get", "deployment", "plumber-api")
		return err != nil
	})
	if _, err := os.Stat(filepath.Join(dir, "plumber-api.yaml")); err == nil {
		t.Error("disabled add-on file still in the manifests directory")
	}
	if _, err := s.Kubectl("-n", "kube-system", "get", "service", "kube-dns"); err != nil {
		t.Error("disabling plumber-api removed coredns too")
	}
	s.Stop(15 * time.Second)
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

const victimManifest = `apiVersion: v1
kind: ConfigMap
metadata:
  name: victim-owned
  namespace: default
data:
  a: b
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: victim-recreated
  namespace: default
data:
  a: b
`

// prepareForeignObjects applies victim.yaml, re-creates one of its objects
// by hand (as a user would, without bramble's tie) and edits the Addon's
// status to list objects of others: a Deployment of the coredns add-on, a
// ConfigMap of another file, a user's Secret and the kube-system Namespace.
// It returns those objects as kubectl arguments.
func prepareForeignObjects(t *testing.T, s *testutil.Server, dir string) [][]string {
	t.Helper()
	write(t, filepath.Join(dir, "victim.yaml"), victimManifest)
	testutil.WaitFor(t, 30*time.Second, "victim.yaml applied", func() bool {
		out, _ := s.Kubectl("-n", "kube-system", "get", "addon", "victim", "-o", "jsonpath={.status.applied}")
		return out == "true"
	})
	tie := s.MustKubectl("get", "configmap", "victim-owned", "-o", `jsonpath={.metadata.annotations.bramble\.io/addon-tie}`)
	if tie == "" {
		t.Fatal("applied object has no bramble.io/addon-tie annotation")
	}
	s.MustKubectl("delete", "configmap", "victim-recreated")
	// The user even copies the add-on label: without bramble's tie it is
	// still the user's.
	s.MustKubectl("create", "configmap", "victim-recreated", "--from-literal=who=user")
	s.MustKubectl("label", "configmap", "victim-recreated", "bramble.io/addon=victim")
	s.MustKubectl("create", "secret", "generic", "user-secret", "--from-literal=password=hunter2")
	status := `{"status":{"objects":[
	  {"apiVersion":"v1","kind":"ConfigMap","namespace":"default","name":"victim-owned"},
	  {"apiVersion":"v1","kind":"ConfigMap","namespace":"default","name":"victim-recreated"},
	  {"apiVersion":"apps/v1","kind":"Deployment","namespace":"kube-system","name":"coredns"},
	  {"apiVersion":"v1","kind":"ConfigMap","namespace":"default","name":"still-applied"},
	  {"apiVersion":"v1","kind":"Secret","namespace":"default","name":"user-secret"},
	  {"apiVersion":"v1","kind":"Namespace","name":"kube-system"}]}}`
	s.MustKubectl("-n", "kube-system", "patch", "addon", "victim", "--subresource=status", "--type=merge", "-p", status)
	if out := s.MustKubectl("-n", "kube-system", "get", "addon", "victim", "-o", "jsonpath={.status.objects[*].name}"); !strings.Contains(out, "coredns") {
		t.Fatalf("Addon status not edited: %q", out)
	}
	return [][]string{
		{"-n", "kube-system", "get", "deployment", "coredns"},
		{"get", "configmap", "still-applied"},
		{"get", "secret", "user-secret"},
		{"get", "namespace", "kube-system"},
		{"get", "configmap", "victim-recreated"},
	}
}

// checkForeignObjectsKept checks that the removed victim.yaml's own object
// was deleted and nothing else it listed.
func checkForeignObjectsKept(t *testing.T, s *testutil.Server, foreign [][]string) {
	t.Helper()
	testutil.WaitFor(t, 60*time.Second, "the removed file's own object deleted", func() bool {
		_, err := s.Kubectl("get", "configmap", "victim-owned")
		return err != nil
	})
	testutil.WaitFor(t, 30*time.Second, "Addon victim deleted", func() bool {
		_, err := s.Kubectl("-n", "kube-system", "get", "addon", "victim")
		return err != nil
	})
	for _, args := range foreign {
		out, err := s.Kubectl(append(args, "-o", "jsonpath={.metadata.deletionTimestamp}")...)
		if err != nil || out != "" {
			t.Errorf("kubectl %s: deleted by the add-on controller (%v %q)", strings.Join(args, " "), err, out)
		}
	}
	if out := s.MustKubectl("get", "configmap", "victim-recreated", "-o", "jsonpath={.data.who}"); out != "user" {
		t.Errorf("the user's re-created ConfigMap changed: who=%q", out)
	}
	if !strings.Contains(s.Log.String(), "object not deleted: not tied to its add-on") {
		t.Error("no log line about the objects not deleted")
	}
	out, _ := s.Kubectl("-n", "kube-system", "get", "events", "--field-selector", "involvedObject.name=victim,reason=NotTied", "-o", "jsonpath={.items[*].message}")
	if !strings.Contains(out, "Deployment kube-system/coredns not deleted") {
		t.Errorf("no NotTied event for coredns: %q", out)
	}
}

const traefikUser = "system:serviceaccount:kube-system:traefik"

const tlsIngress = `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: site
  namespace: tls-test
spec:
  tls:
    - hosts: [site.bramble.test]
      secretName: site-tls
    - hosts: [other.bramble.test]
      secretName: no-keys
  rules:
    - host: site.bramble.test
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: site
                port:
                  number: 80
`

// checkTraefikSecrets: Traefik's service account lists and gets only the
// Secrets with tls.crt and tls.key that an Ingress of their namespace names.
func checkTraefikSecrets(t *testing.T, s *testutil.Server) {
	t.Helper()
	testutil.WaitFor(t, 60*time.Second, "Traefik's RBAC applied", func() bool {
		out, _ := s.Kubectl("auth", "can-i", "list", "secrets", "--as", traefikUser, "-A")
		return out == "yes"
	})
	s.MustKubectl("create", "namespace", "tls-test")
	s.MustKubectl("-n", "tls-test", "create", "secret", "generic", "site-tls", "--type=kubernetes.io/tls",
		"--from-literal=tls.crt=certificate", "--from-literal=tls.key=key")
	s.MustKubectl("-n", "tls-test", "create", "secret", "generic", "no-keys", "--from-literal=password=a")
	s.MustKubectl("-n", "tls-test", "create", "secret", "generic", "db-password", "--from-literal=password=b")
	s.MustKubectl("-n", "kube-system", "create", "secret", "generic", "sensitive", "--from-literal=password=c")
	// A label set by hand on an unreferenced Secret is taken away.
	s.MustKubectl("-n", "tls-test", "label", "secret", "db-password", "bramble.io/ingress-tls=true")
	ingress := filepath.Join(t.TempDir(), "ingress.yaml")
	write(t, ingress, tlsIngress)
	s.MustKubectl("apply", "-f", ingress)

	asTraefik := func(args ...string) (string, error) {
		return s.Kubectl(append([]string{"--as", traefikUser}, args...)...)
	}
	visible := func() string {
		out, err := asTraefik("get", "secrets", "-A", "-o", `jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {end}`)
		if err != nil {
			return "error: " + out
		}
		return strings.TrimSpace(out)
	}
	testutil.WaitFor(t, 30*time.Second, "Traefik sees exactly the referenced TLS Secret", func() bool {
		return visible() == "tls-test/site-tls"
	})
	if all := s.MustKubectl("get", "secrets", "-A", "-o", "name"); len(strings.Fields(all)) < 4 {
		t.Errorf("the admin sees too few Secrets: %q", all)
	}
	if out := s.MustKubectl("-n", "tls-test", "get", "secret", "db-password", "-o", "jsonpath={.metadata.labels}"); strings.Contains(out, "ingress-tls") {
		t.Errorf("hand-set label not removed: %s", out)
	}
	testutil.WaitFor(t, 30*time.Second, "Traefik can get the referenced Secret", func() bool {
		_, err := asTraefik("-n", "tls-test", "get", "secret", "site-tls")
		return err == nil
	})
	for _, name := range []string{"db-password", "no-keys"} {
		out, err := asTraefik("-n", "tls-test", "get", "secret", name)
		if err == nil || !strings.Contains(out, "Forbidden") {
			t.Errorf("Traefik's get of %s: %v %s", name, err, out)
		}
	}
	if out, err := asTraefik("-n", "kube-system", "get", "secret", "sensitive"); err == nil || !strings.Contains(out, "Forbidden") {
		t.Errorf("Traefik's get of a kube-system Secret: %v %s", err, out)
	}
	if out, err := asTraefik("-n", "tls-test", "delete", "secret", "site-tls"); err == nil {
		t.Errorf("Traefik deleted a Secret: %s", out)
	}

	// No longer referenced: the label goes, and Traefik sees nothing.
	s.MustKubectl("-n", "tls-test", "delete", "ingress", "site")
	testutil.WaitFor(t, 30*time.Second, "Traefik sees no Secret once the Ingress is gone", func() bool {
		return visible() == ""
	})
	s.MustKubectl("delete", "namespace", "tls-test", "--wait=false")
}
