package deploy

import (
	"context"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
)

// AddonGVR is the Addon custom resource: one per manifest file, in
// kube-system, with the file's objects and whether they applied.
var AddonGVR = schema.GroupVersionResource{Group: "bramble.io", Version: "v1", Resource: "addons"}

const addonNamespace = "kube-system"

func addonCRD() *apiextensionsv1.CustomResourceDefinition {
	str := apiextensionsv1.JSONSchemaProps{Type: "string"}
	preserve := true
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "addons.bramble.io"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "bramble.io",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "addons", Singular: "addon", Kind: "Addon", ListKind: "AddonList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
				AdditionalPrinterColumns: []apiextensionsv1.CustomResourceColumnDefinition{
					{Name: "Source", Type: "string", JSONPath: ".spec.source"},
					{Name: "Applied", Type: "string", JSONPath: ".status.applied"},
					{Name: "Objects", Type: "integer", JSONPath: ".status.objectCount"},
					{Name: "Images", Type: "string", JSONPath: ".status.images"},
					{Name: "Message", Type: "string", JSONPath: ".status.message", Priority: 1},
				},
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
							"source": str, "checksum": str,
						}},
						"status": {Type: "object", XPreserveUnknownFields: &preserve},
					},
				}},
			}},
		},
	}
}

// ensureCRD creates the Addon CRD and waits until it is served.
func ensureCRD(ctx context.Context, cfg *rest.Config) error {
	cs, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	crds := cs.ApiextensionsV1().CustomResourceDefinitions()
	want := addonCRD()
	_, err = crds.Create(ctx, want, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Made by an earlier version: bring its columns and schema up to date.
		var have *apiextensionsv1.CustomResourceDefinition
		if have, err = crds.Get(ctx, want.Name, metav1.GetOptions{}); err == nil && !sameColumns(have, want) {
			have.Spec.Versions = want.Spec.Versions
			_, err = crds.Update(ctx, have, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("create Addon CRD: %w", err)
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		crd, err := crds.Get(ctx, want.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
}

func sameColumns(a, b *apiextensionsv1.CustomResourceDefinition) bool {
	return len(a.Spec.Versions) == len(b.Spec.Versions) && len(a.Spec.Versions) > 0 &&
		equality.Semantic.DeepEqual(a.Spec.Versions[0].AdditionalPrinterColumns, b.Spec.Versions[0].AdditionalPrinterColumns)
}

// crdGVR is where the CRDs a manifest applies are read back.
var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// crdWait bounds the wait for freshly applied CRDs to be served.
const crdWait = 30 * time.Second

// crdNames are the names of the CustomResourceDefinitions among refs.
func crdNames(refs []objRef) []string {
	var names []string
	for _, r := range refs {
		if r.Kind == "CustomResourceDefinition" {
			names = append(names, r.Name)
		}
	}
	return names
}

// established reports whether a CRD (as read through the dynamic client)
// has the condition Established=True: its kind is served.
func established(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == string(apiextensionsv1.Established) && m["status"] == string(apiextensionsv1.ConditionTrue) {
			return true
		}
	}
	return false
}

// waitEstablished waits until every CRD named is established, for at most
// crdWait in all; the caller retries what failed either way, and reports
// what still fails.
func (c *Controller) waitEstablished(ctx context.Context, names []string) {
	if len(names) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, crdWait)
	defer cancel()
	for _, name := range names {
		_ = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			crd, err := c.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
			return err == nil && established(crd), nil
		})
	}
}
