package deploy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
)

// BundledImages maps each enabled bundled add-on to the container images its
// workloads run (containers and init containers of Pods and of the pod
// templates of Deployments, DaemonSets, StatefulSets, Jobs and CronJobs).
func BundledImages(cfg Config) (map[string][]string, error) {
	enabled, _, err := bundledAddons(cfg)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, name := range enabled {
		data, err := render(cfg, name+".yaml")
		if err != nil {
			return nil, err
		}
		objs, err := decode(data)
		if err != nil {
			return nil, fmt.Errorf("bundled manifest %s.yaml: %w", name, err)
		}
		var imgs []string
		for _, o := range objs {
			imgs = append(imgs, workloadImages(o)...)
		}
		slices.Sort(imgs)
		if imgs = slices.Compact(imgs); len(imgs) > 0 {
			out[name] = imgs
		}
	}
	return out, nil
}

// workloadImages lists the images of a workload object's pod spec.
func workloadImages(o *unstructured.Unstructured) []string {
	var path []string
	switch o.GetKind() {
	case "Pod":
		path = []string{"spec"}
	case "Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job":
		path = []string{"spec", "template", "spec"}
	case "CronJob":
		path = []string{"spec", "jobTemplate", "spec", "template", "spec"}
	default:
		return nil
	}
	var imgs []string
	for _, field := range []string{"initContainers", "containers"} {
		list, _, _ := unstructured.NestedSlice(o.Object, append(slices.Clone(path), field)...)
		for _, c := range list {
			if m, ok := c.(map[string]any); ok {
				if img, ok := m["image"].(string); ok && img != "" {
					imgs = append(imgs, img)
				}
			}
		}
	}
	return imgs
}

// imagesFieldManager owns the Addon status fields about images, apart from
// the controller's own (server-side apply keeps both).
const imagesFieldManager = "bramble-images"

// RecordMissingImages writes an Addon's image availability on the node that
// checked it into its status: status.missingImages and a one-line
// status.images ("present" or "missing: ..."), shown by
// `kubectl -n kube-system get addons`. A NotFound error means the Addon does
// not exist yet.
func RecordMissingImages(ctx context.Context, dyn dynamic.Interface, addon string, missing []string, fix string) error {
	summary := "present"
	if len(missing) > 0 {
		summary = "missing: " + strings.Join(missing, ", ") + "; " + fix
	}
	list := make([]any, 0, len(missing))
	for _, m := range missing {
		list = append(list, m)
	}
	status := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "bramble.io/v1", "kind": "Addon",
		"metadata": map[string]any{"name": addon, "namespace": addonNamespace},
		"status":   map[string]any{"images": summary, "missingImages": list},
	}}
	_, err := dyn.Resource(AddonGVR).Namespace(addonNamespace).ApplyStatus(ctx, addon, status,
		metav1.ApplyOptions{FieldManager: imagesFieldManager, Force: true})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("record images of Addon %s: %w", addon, err)
	}
	return err
}
