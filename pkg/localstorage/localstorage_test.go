package localstorage

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestOwnedDir(t *testing.T) {
	pv := func(path string) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-1"},
			Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path}}}}
	}
	root := "/var/lib/bramble/storage"
	if got, err := ownedDir(root, pv(volumeDir(root, "pvc-1", "ns", "data"))); err != nil || got != root+"/pvc-1_ns_data" {
		t.Errorf("own volume: %q, %v", got, err)
	}
	for _, path := range []string{"/etc", root, root + "/pvc-2_ns_data", root + "/../x/pvc-1_ns_data", root + "/pvc-1_ns_data/sub", "pvc-1_ns_data"} {
		if _, err := ownedDir(root, pv(path)); err == nil {
			t.Errorf("%s: accepted", path)
		}
	}
	if _, err := ownedDir(root, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-1"}}); err == nil {
		t.Error("volume without hostPath accepted")
	}
}
