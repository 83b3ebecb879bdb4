package deploy

import (
	"context"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
)

func TestEstablished(t *testing.T) {
	cond := func(typ, status string) any { return map[string]any{"type": typ, "status": status} }
	tests := []struct {
		name  string
		conds []any // nil: no status at all
		want  bool
	}{
		{"no status", nil, false},
		{"no conditions", []any{}, false},
		{"names accepted only", []any{cond("NamesAccepted", "True")}, false},
		{"established false", []any{cond("NamesAccepted", "True"), cond("Established", "False")}, false},
		{"established", []any{cond("NamesAccepted", "True"), cond("Established", "True")}, true},
		{"malformed condition ignored", []any{"junk", cond("Established", "True")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			crd := &unstructured.Unstructured{Object: map[string]any{"kind": "CustomResourceDefinition"}}
			if tt.conds != nil {
				crd.Object["status"] = map[string]any{"conditions": tt.conds}
			}
			if got := established(crd); got != tt.want {
				t.Errorf("established = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCRDNames(t *testing.T) {
	refs := []objRef{
		{APIVersion: "v1", Kind: "Namespace", Name: "traefik"},
		{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition", Name: "ingressroutes.traefik.io"},
		{APIVersion: "apps/v1", Kind: "DaemonSet", Namespace: "kube-system", Name: "traefik"},
		{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition", Name: "middlewares.traefik.io"},
	}
	if got, want := crdNames(refs), []string{"ingressroutes.traefik.io", "middlewares.traefik.io"}; !slices.Equal(got, want) {
		t.Errorf("crdNames = %q, want %q", got, want)
	}
	if got := crdNames(nil); got != nil {
		t.Errorf("crdNames(nil) = %q", got)
	}
}

// TestWaitEstablished: the retry of a manifest waits until the CRDs it
// applied are served, by their condition, not for a fixed time.
func TestWaitEstablished(t *testing.T) {
	crd := func(established bool) *unstructured.Unstructured {
		status := "False"
		if established {
			status = "True"
		}
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
			"metadata": map[string]any{"name": "widgets.example.com"},
			"status":   map[string]any{"conditions": []any{map[string]any{"type": "Established", "status": status}}},
		}}
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{crdGVR: "CustomResourceDefinitionList"}, crd(false))
	gets := 0
	dyn.PrependReactor("get", "customresourcedefinitions", func(clienttesting.Action) (bool, runtime.Object, error) {
		gets++
		return true, crd(gets >= 3), nil // established from the third look on
	})
	c := &Controller{dyn: dyn}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.waitEstablished(ctx, []string{"widgets.example.com"})
	if gets != 3 || ctx.Err() != nil {
		t.Errorf("returned after %d looks (ctx %v), want 3: as soon as it is established", gets, ctx.Err())
	}

	gets = 0
	c.waitEstablished(ctx, nil)
	if gets != 0 {
		t.Errorf("no CRD applied: %d looks, want none", gets)
	}
}
