// Package deploy is bramble's add-on controller: it writes the bundled
// manifests into the manifests directory and applies every file there with
// server-side apply; a changed file is re-applied, objects a file no longer
// holds are deleted, and a removed file's objects are deleted. Each file is an
// Addon custom resource in kube-system showing its objects and status; a bad
// file yields a Warning event and a log line naming file and object, and never
// blocks the other files. An object is deleted only when it carries a tie to
// its add-on that only this server can make (AnnotationTie), so a changed
// Addon.status cannot have other objects deleted.
package deploy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/template"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bramble-pi/bramble/pkg/pki"
)

// Values are the cluster settings bundled manifests may use.
type Values struct {
	ClusterDNS    string
	ClusterDomain string
}

// Config is the controller's configuration.
type Config struct {
	Dir        string // <data-dir>/server/manifests
	Bundled    fs.FS  // embedded *.yaml
	Disabled   []string
	Values     Values
	Kubeconfig string
	Interval   time.Duration
	// TieKey keys the tie (AnnotationTie) between an add-on and its
	// objects: EnsureTieKey.
	TieKey []byte
}

const fieldManager = "bramble-deploy"

// LabelAddon marks every object an add-on file created.
const LabelAddon = "bramble.io/addon"

// WriteBundled renders the bundled manifests into cfg.Dir. A bundled add-on
// with a <name>.yaml.skip file next to it, or named in Disabled, is not
// written, and a copy from an earlier start is removed (so its objects go).
func WriteBundled(cfg Config) error {
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", cfg.Dir, err)
	}
	enabled, off, err := bundledAddons(cfg)
	if err != nil {
		return err
	}
	for _, name := range off {
		if err := os.Remove(filepath.Join(cfg.Dir, name+".yaml")); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove disabled add-on %s: %w", name, err)
		}
	}
	for _, name := range enabled {
		target := filepath.Join(cfg.Dir, name+".yaml")
		out, err := render(cfg, name+".yaml")
		if err != nil {
			return err
		}
		if old, err := os.ReadFile(target); err == nil && bytes.Equal(old, out) {
			continue // unchanged: no write (SD cards)
		}
		if err := pki.WriteFile(target, out, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// bundledAddons splits the bundled add-ons (<name>.yaml in cfg.Bundled) into
// the enabled ones and those turned off, by Disabled or by a
// <name>.yaml.skip file in cfg.Dir. A Disabled name that is no bundled
// add-on is an error.
func bundledAddons(cfg Config) (enabled, off []string, err error) {
	entries, err := fs.ReadDir(cfg.Bundled, ".")
	if err != nil {
		return nil, nil, fmt.Errorf("bundled manifests: %w", err)
	}
	disabled := map[string]bool{}
	for _, d := range cfg.Disabled {
		disabled[strings.TrimSpace(d)] = true
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".yaml")
		if !ok {
			continue
		}
		if _, err := os.Stat(filepath.Join(cfg.Dir, e.Name()+".skip")); err == nil || disabled[name] {
			off = append(off, name)
		} else {
			enabled = append(enabled, name)
		}
	}
	if err := CheckDisabled(cfg.Bundled, cfg.Disabled); err != nil {
		return nil, nil, err
	}
	return enabled, off, nil
}

// CheckDisabled refuses a --disable name that is no bundled add-on (a
// <name>.yaml in bundled, or one of others: add-ons without a manifest), so
// that a typo stops the start before anything runs.
func CheckDisabled(bundled fs.FS, disabled []string, others ...string) error {
	entries, err := fs.ReadDir(bundled, ".")
	if err != nil {
		return fmt.Errorf("bundled manifests: %w", err)
	}
	known := map[string]bool{}
	var names []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".yaml"); ok {
			known[name] = true
			names = append(names, name)
		}
	}
	for _, name := range others {
		known[name] = true
		names = append(names, name)
	}
	slices.Sort(names)
	for _, d := range disabled {
		if name := strings.TrimSpace(d); name != "" && !known[name] {
			return fmt.Errorf("--disable %s: no bundled add-on of that name (there are: %s)", name, strings.Join(names, ", "))
		}
	}
	return nil
}

// render renders one bundled manifest with the cluster's values.
func render(cfg Config, file string) ([]byte, error) {
	raw, err := fs.ReadFile(cfg.Bundled, file)
	if err != nil {
		return nil, fmt.Errorf("bundled manifest %s: %w", file, err)
	}
	tmpl, err := template.New(file).Option("missingkey=error").Parse(string(raw))
	if err != nil {
		return nil, fmt.Errorf("bundled manifest %s: %w", file, err)
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, cfg.Values); err != nil {
		return nil, fmt.Errorf("bundled manifest %s: %w", file, err)
	}
	return out.Bytes(), nil
}

// objRef names one applied object.
type objRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
}

func (o objRef) String() string {
	if o.Namespace != "" {
		return fmt.Sprintf("%s %s/%s", o.Kind, o.Namespace, o.Name)
	}
	return fmt.Sprintf("%s %s", o.Kind, o.Name)
}

type fileState struct {
	checksum string
	objects  []objRef
	failed   bool
	tried    time.Time
}

// Controller applies the manifests directory.
type Controller struct {
	cfg    Config
	log    *slog.Logger
	dyn    dynamic.Interface
	core   kubernetes.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	state  map[string]*fileState
	tier   tier
}

// New connects the controller to the apiserver and makes sure the Addon CRD
// exists; it also learns what earlier runs applied, from the Addons.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Controller, error) {
	if len(cfg.TieKey) != tieKeySize {
		return nil, fmt.Errorf("deploy: add-on tie key has %d bytes, want %d", len(cfg.TieKey), tieKeySize)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("deploy kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = 50, 100
	// The process drops API warnings (pkg/process); those about a user's
	// manifests (deprecated APIs, unknown fields) are worth a line.
	rc.WarningHandler = warningLogger{log}
	core, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	if err := ensureCRD(ctx, rc); err != nil {
		return nil, err
	}
	c := &Controller{cfg: cfg, log: log, dyn: dyn, core: core, state: map[string]*fileState{}, tier: tier{key: cfg.TieKey},
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(core.Discovery()))}
	if c.cfg.Interval == 0 {
		c.cfg.Interval = 2 * time.Second
	}
	if err := c.loadAddons(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Run syncs the directory until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		c.Sync(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sync applies new and changed files and removes what deleted files made.
func (c *Controller) Sync(ctx context.Context) {
	files, err := c.listFiles()
	if err != nil {
		c.log.Error("read manifests directory", "dir", c.cfg.Dir, "err", err)
		return
	}
	for name, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			c.log.Error("read manifest", "file", path, "err", err)
			continue
		}
		sum := checksum(data)
		st := c.state[name]
		if st != nil && st.checksum == sum && (!st.failed || time.Since(st.tried) < 15*time.Second) {
			continue
		}
		c.applyFile(ctx, name, path, sum, data)
	}
	for name := range c.state {
		if _, ok := files[name]; !ok {
			c.removeAddon(ctx, name)
		}
	}
}

func (c *Controller) listFiles() (map[string]string, error) {
	entries, err := os.ReadDir(c.cfg.Dir)
	if err != nil {
		return nil, err
	}
	files := map[string]string{}
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		files[strings.TrimSuffix(e.Name(), ext)] = filepath.Join(c.cfg.Dir, e.Name())
	}
	return files, nil
}

func checksum(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// applyFile applies one file's objects and prunes what it no longer holds.
func (c *Controller) applyFile(ctx context.Context, name, path, sum string, data []byte) {
	st := c.state[name]
	if st == nil {
		st = &fileState{}
		c.state[name] = st
	}
	st.tried = time.Now()
	objs, err := decode(data)
	if err != nil {
		st.checksum, st.failed = sum, true
		msg := fmt.Sprintf("file %s is malformed: %v", path, err)
		c.log.Error("manifest not applied", "file", path, "err", err)
		c.record(ctx, name, path, sum, st.objects, false, msg, "Malformed")
		return
	}
	applied, failures := c.applyAll(ctx, name, objs)
	var pruneErrs []string
	for _, old := range st.objects {
		if !containsRef(applied, old) && !failedRef(failures, old) {
			if err := c.delete(ctx, name, old); errors.Is(err, errNotTied) {
				c.notDeleted(ctx, name, old)
			} else if err != nil {
				pruneErrs = append(pruneErrs, fmt.Sprintf("delete %s: %v", old, err))
			}
		}
	}
	st.checksum, st.objects = sum, applied
	for ref := range failures {
		st.objects = append(st.objects, ref) // still ours: retried, and pruned later
	}
	st.failed = len(failures) > 0 || len(pruneErrs) > 0
	if !st.failed {
		c.log.Info("applied manifest", "file", path, "objects", len(applied))
		c.record(ctx, name, path, sum, st.objects, true, fmt.Sprintf("applied %d objects", len(applied)), "Applied")
		return
	}
	var msgs []string
	for ref, err := range failures {
		msgs = append(msgs, fmt.Sprintf("%s: %v", ref, err))
		c.log.Error("manifest object not applied", "file", path, "object", ref.String(), "err", err)
	}
	msgs = append(msgs, pruneErrs...)
	sort.Strings(msgs)
	c.record(ctx, name, path, sum, st.objects, false, fmt.Sprintf("file %s: %s", path, strings.Join(msgs, "; ")), "ApplyFailed")
}

// containsRef reports whether refs name the object r names, in any version
// of its API group.
func containsRef(refs []objRef, r objRef) bool {
	for _, x := range refs {
		if sameObject(x, r) {
			return true
		}
	}
	return false
}

func failedRef(f map[objRef]error, r objRef) bool {
	for x := range f {
		if sameObject(x, r) {
			return true
		}
	}
	return false
}

func sameObject(a, b objRef) bool {
	ga, _ := schema.ParseGroupVersion(a.APIVersion)
	gb, _ := schema.ParseGroupVersion(b.APIVersion)
	return ga.Group == gb.Group && a.Kind == b.Kind && a.Namespace == b.Namespace && a.Name == b.Name
}

// decode reads a multi-document YAML or JSON file.
func decode(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for i := 1; ; i++ {
		var raw map[string]any
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(raw) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: raw}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("document %d: apiVersion and kind are required", i)
		}
		if u.IsList() {
			err := u.EachListItem(func(o runtimeObject) error {
				out = append(out, o.(*unstructured.Unstructured))
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("document %d: %w", i, err)
			}
			continue
		}
		if u.GetName() == "" {
			return nil, fmt.Errorf("document %d (%s): metadata.name is required", i, u.GetKind())
		}
		out = append(out, u)
	}
}

// applyAll applies objects (namespaces and CRDs first), retrying the ones
// that failed once after refreshing discovery (a CRD may just have appeared).
func (c *Controller) applyAll(ctx context.Context, addon string, objs []*unstructured.Unstructured) ([]objRef, map[objRef]error) {
	sort.SliceStable(objs, func(i, j int) bool { return rank(objs[i]) < rank(objs[j]) })
	var applied []objRef
	failures := map[objRef]error{}
	pending := objs
	for pass := 0; pass < 2 && len(pending) > 0; pass++ {
		if pass > 0 {
			// A kind the first pass did not know may be one a CRD it
			// applied defines: wait until those are served, look again.
			c.waitEstablished(ctx, crdNames(applied))
			c.mapper.Reset()
		}
		var retry []*unstructured.Unstructured
		for _, o := range pending {
			ref, err := c.apply(ctx, addon, o)
			if err != nil {
				failures[ref] = err
				retry = append(retry, o)
				continue
			}
			delete(failures, ref)
			applied = append(applied, ref)
		}
		pending = retry
	}
	return applied, failures
}

func rank(o *unstructured.Unstructured) int {
	switch o.GetKind() {
	case "Namespace":
		return 0
	case "CustomResourceDefinition":
		return 1
	default:
		return 2
	}
}

// resource finds where objects of a kind are served; namespace is the
// object's namespace as it will be ("default" for a namespaced object that
// names none, empty for a cluster-scoped one).
func (c *Controller) resource(gvk schema.GroupVersionKind, namespace string) (dynamic.ResourceInterface, *meta.RESTMapping, string, error) {
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, nil, "", fmt.Errorf("unknown kind %s: %w", gvk.String(), err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if namespace == "" {
			namespace = "default"
		}
		return c.dyn.Resource(m.Resource).Namespace(namespace), m, namespace, nil
	}
	return c.dyn.Resource(m.Resource), m, "", nil
}

func (c *Controller) apply(ctx context.Context, addon string, o *unstructured.Unstructured) (objRef, error) {
	ref := objRef{APIVersion: o.GetAPIVersion(), Kind: o.GetKind(), Namespace: o.GetNamespace(), Name: o.GetName()}
	ri, m, ns, err := c.resource(o.GroupVersionKind(), o.GetNamespace())
	if err != nil {
		return ref, err
	}
	ref.Namespace = ns
	o = o.DeepCopy()
	o.SetNamespace(ns)
	labels := o.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelAddon] = addon
	o.SetLabels(labels)
	if annotations := o.GetAnnotations(); annotations[AnnotationTie] != "" {
		delete(annotations, AnnotationTie) // only bramble ties
		o.SetAnnotations(annotations)
	}
	applied, err := ri.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
	if err != nil {
		return ref, err
	}
	return ref, c.ensureTie(ctx, ri, addon, m, applied)
}

// ensureTie gives an applied object its tie (it names the UID, known once
// the object exists): one more write when the object was created (or the
// key changed), none otherwise. The patch names the UID, so it cannot land
// on an object re-created in between.
func (c *Controller) ensureTie(ctx context.Context, ri dynamic.ResourceInterface, addon string, m *meta.RESTMapping, obj *unstructured.Unstructured) error {
	want := c.tier.tie(addon, tieObject(m, obj))
	if obj.GetAnnotations()[AnnotationTie] == want {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"uid": obj.GetUID(), "annotations": map[string]string{AnnotationTie: want},
	}})
	if err != nil {
		return err
	}
	_, err = ri.Patch(ctx, obj.GetName(), types.MergePatchType, patch, metav1.PatchOptions{FieldManager: fieldManager + "-tie"})
	if err != nil {
		return fmt.Errorf("tie to add-on %s: %w", addon, err)
	}
	return nil
}

// tieObject identifies an object as it is served for a tie.
func tieObject(m *meta.RESTMapping, obj *unstructured.Unstructured) object {
	return object{group: m.GroupVersionKind.Group, kind: m.GroupVersionKind.Kind, namespace: obj.GetNamespace(), name: obj.GetName(), uid: obj.GetUID()}
}

// errNotTied: the object exists but does not carry the add-on's tie, so it
// was not applied by this server for that add-on (or was changed since).
var errNotTied = errors.New("not tied to the add-on")

// delete deletes the object ref names if it is tied to the add-on. ref comes
// from the Addon's status, which is not trusted: only the tie is. The delete
// has the UID that was checked as a precondition, so an object replaced in
// between is left alone (and checked again on the next sync).
func (c *Controller) delete(ctx context.Context, addon string, ref objRef) error {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return fmt.Errorf("%s: %w", ref, errNotTied)
	}
	ri, m, _, err := c.resource(gv.WithKind(ref.Kind), ref.Namespace)
	if meta.IsNoMatchError(err) {
		return nil // no such kind is served: nothing of it to delete
	}
	if err != nil {
		return err
	}
	obj, err := ri.Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !c.tier.verify(addon, tieObject(m, obj), obj.GetLabels(), obj.GetAnnotations()) {
		return errNotTied
	}
	uid := obj.GetUID()
	policy := metav1.DeletePropagationBackground
	err = ri.Delete(ctx, ref.Name, metav1.DeleteOptions{PropagationPolicy: &policy, Preconditions: &metav1.Preconditions{UID: &uid}})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// removeAddon deletes what a removed file created, namespaces last.
func (c *Controller) removeAddon(ctx context.Context, name string) {
	st := c.state[name]
	objs := append([]objRef(nil), st.objects...)
	sort.SliceStable(objs, func(i, j int) bool { return objs[i].Kind != "Namespace" && objs[j].Kind == "Namespace" })
	var failed []string
	var left []objRef
	for _, ref := range objs {
		if err := c.delete(ctx, name, ref); errors.Is(err, errNotTied) {
			c.notDeleted(ctx, name, ref)
		} else if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", ref, err))
			left = append(left, ref)
		}
	}
	st.objects = left // the next sync retries only these
	if len(failed) > 0 {
		c.log.Error("could not delete objects of a removed manifest", "addon", name, "errors", strings.Join(failed, "; "))
		return // retried on the next sync
	}
	err := c.dyn.Resource(AddonGVR).Namespace(addonNamespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		c.log.Error("delete Addon", "addon", name, "err", err)
		return
	}
	c.log.Info("removed add-on", "addon", name, "listed", len(objs))
	delete(c.state, name)
}

// warningLogger logs the apiserver's warnings about applied objects.
type warningLogger struct{ log *slog.Logger }

func (w warningLogger) HandleWarningHeader(code int, agent, text string) {
	if code == 299 && text != "" {
		w.log.Warn("apiserver warning while applying manifests", "warning", text)
	}
}
