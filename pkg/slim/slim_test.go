package slim

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDropManagedFields(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}}}
	got, err := DropManagedFields(cm)
	if err != nil || got.(*corev1.ConfigMap).ManagedFields != nil || got.(*corev1.ConfigMap).Name != "c" {
		t.Errorf("got %+v, %v; want the ConfigMap without managed fields", got, err)
	}
	if got, err := DropManagedFields("not an object"); err != nil || got != "not an object" {
		t.Errorf("a non-object: got %v, %v; want it back unchanged", got, err)
	}
}
