// Package slim cuts what bramble's controllers cache to what they read.
package slim

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// DropManagedFields is an informer transform (cache.TransformFunc) that
// leaves out an object's managed fields, which no bramble controller reads
// and which are often the larger part of a small object.
func DropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
