package deploy

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

type runtimeObject = runtime.Object

// record writes the Addon for a file and, when something went wrong, a
// Warning event on it naming the file and the object.
func (c *Controller) record(ctx context.Context, name, path, sum string, objs []objRef, ok bool, message, reason string) {
	addons := c.dyn.Resource(AddonGVR).Namespace(addonNamespace)
	refs := make([]any, 0, len(objs))
	for _, o := range objs {
		m := map[string]any{"apiVersion": o.APIVersion, "kind": o.Kind, "name": o.Name}
		if o.Namespace != "" {
			m["namespace"] = o.Namespace
		}
		refs = append(refs, m)
	}
	addon := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "bramble.io/v1", "kind": "Addon",
		"metadata": map[string]any{"name": name, "namespace": addonNamespace,
			"annotations": map[string]any{annotationTieKey: c.tier.keyID()}},
		"spec": map[string]any{"source": path, "checksum": sum},
	}}
	applied, err := addons.Apply(ctx, name, addon, metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
	if err != nil {
		c.log.Error("update Addon", "addon", name, "err", err)
		return
	}
	status := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "bramble.io/v1", "kind": "Addon",
		"metadata": map[string]any{"name": name, "namespace": addonNamespace},
		"status": map[string]any{
			"applied": ok, "message": message, "objects": refs, "objectCount": int64(len(refs)),
			"lastAttempt": time.Now().UTC().Format(time.RFC3339),
		},
	}}
	if _, err := addons.ApplyStatus(ctx, name, status, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
		c.log.Error("update Addon status", "addon", name, "err", err)
	}
	if ok {
		return
	}
	c.warn(ctx, name, applied.GetUID(), reason, message)
}

// warn records a Warning event on the Addon.
func (c *Controller) warn(ctx context.Context, name string, uid types.UID, reason, message string) {
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: name + ".", Namespace: addonNamespace},
		InvolvedObject: corev1.ObjectReference{APIVersion: "bramble.io/v1", Kind: "Addon", Namespace: addonNamespace,
			Name: name, UID: uid},
		Reason: reason, Message: truncate(message, 1000), Type: corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "bramble-deploy"},
		FirstTimestamp: metav1.Now(), LastTimestamp: metav1.Now(), Count: 1,
	}
	if _, err := c.core.CoreV1().Events(addonNamespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		c.log.Error("create event", "addon", name, "err", err)
	}
}

// notDeleted reports an object the Addon lists that is not tied to it: it
// is left in place (it was made or changed by someone else, or the Addon's
// status was edited).
func (c *Controller) notDeleted(ctx context.Context, name string, ref objRef) {
	msg := fmt.Sprintf("%s not deleted: it is listed by the Addon but not tied to add-on %s (no valid %s annotation)", ref, name, AnnotationTie)
	c.log.Warn("object not deleted: not tied to its add-on", "addon", name, "object", ref.String())
	c.warn(ctx, name, "", "NotTied", msg)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// loadAddons learns from existing Addons what earlier runs applied, so that a
// file removed while bramble was down still has its objects deleted. The
// objects listed are only candidates: delete checks each one's tie.
func (c *Controller) loadAddons(ctx context.Context) error {
	list, err := c.dyn.Resource(AddonGVR).Namespace(addonNamespace).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list Addons: %w", err)
	}
	for _, a := range list.Items {
		st := &fileState{}
		// Objects tied with another key (or by a bramble without ties) are
		// applied again, which ties them with this one.
		if a.GetAnnotations()[annotationTieKey] == c.tier.keyID() {
			st.checksum, _, _ = unstructured.NestedString(a.Object, "spec", "checksum")
		}
		objs, _, _ := unstructured.NestedSlice(a.Object, "status", "objects")
		for _, o := range objs {
			m, ok := o.(map[string]any)
			if !ok {
				continue
			}
			str := func(k string) string { s, _ := m[k].(string); return s }
			st.objects = append(st.objects, objRef{APIVersion: str("apiVersion"), Kind: str("kind"), Namespace: str("namespace"), Name: str("name")})
		}
		if applied, _, _ := unstructured.NestedBool(a.Object, "status", "applied"); !applied {
			st.failed = true
		}
		c.state[a.GetName()] = st
	}
	return nil
}
