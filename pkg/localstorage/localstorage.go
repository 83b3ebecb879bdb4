// Package localstorage is the bundled local-path storage: a provisioner in
// the server that answers PersistentVolumeClaims of the StorageClass
// local-path with hostPath volumes on the node the scheduler picked, and a
// controller in every node's bramble that creates and removes those
// directories under the node's own storage directory. No helper pod.
//
// The size a claim asks for is recorded in the volume's capacity, not
// enforced: a volume can use the whole filesystem of the storage directory.
package localstorage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/bramble-pi/bramble/pkg/workloop"
)

const (
	// ProvisionerName is the StorageClass provisioner name bramble answers.
	ProvisionerName = "bramble.io/local-path"
	// LabelNode names the node that holds a volume's directory.
	LabelNode = "storage.bramble.io/node"
	// AnnotationPath, on a Node, is that node's storage directory (set by
	// the node's own bramble; the provisioner puts volumes there).
	AnnotationPath = "storage.bramble.io/local-path"
	// AnnotationRemoved, on a released volume, says its node removed the
	// directory: the provisioner then deletes the PersistentVolume.
	AnnotationRemoved = "storage.bramble.io/removed"

	annProvisionedBy   = "pv.kubernetes.io/provisioned-by"
	annSelectedNode    = "volume.kubernetes.io/selected-node"
	annStorageProvider = "volume.kubernetes.io/storage-provisioner"
	volumePrefix       = "pvc-"
)

// volumeDir is the directory of a volume under a node's storage directory.
func volumeDir(root, pvName, namespace, claim string) string {
	return filepath.Join(root, pvName+"_"+namespace+"_"+claim)
}

// ownedDir returns the directory of a volume if it is a direct child of
// root named after the volume, the only directories a node creates or
// removes; anything else is refused with the reason.
func ownedDir(root string, pv *corev1.PersistentVolume) (string, error) {
	if pv.Spec.HostPath == nil {
		return "", fmt.Errorf("volume %s has no hostPath", pv.Name)
	}
	p := pv.Spec.HostPath.Path
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return "", fmt.Errorf("volume %s: path %q is not a clean absolute path", pv.Name, p)
	}
	if filepath.Dir(p) != filepath.Clean(root) || !strings.HasPrefix(filepath.Base(p), pv.Name+"_") {
		return "", fmt.Errorf("volume %s: path %q is not a volume directory under %s", pv.Name, p, root)
	}
	return p, nil
}

// enqueueOnChange queues the key (with prefix) of every added or updated
// object.
func enqueueOnChange(q workloop.Queue, prefix string) cache.ResourceEventHandler {
	add := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			q.Add(prefix + key)
		}
	}
	return cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, obj any) { add(obj) }}
}

// work runs sync on each queued key until ctx ends; a failed key is
// retried later.
func work(ctx context.Context, q workloop.Queue, log *slog.Logger, sync func(context.Context, string) error) {
	workloop.Run(ctx, q, sync, func(key string, err error) {
		level := slog.LevelWarn
		if errors.Is(err, errWait) {
			level = slog.LevelDebug
		}
		log.Log(ctx, level, "local storage: retrying", "object", key, "err", err)
	})
}
