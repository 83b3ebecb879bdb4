package localstorage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/bramble-pi/bramble/pkg/slim"
	"github.com/bramble-pi/bramble/pkg/workloop"
)

// Node keeps the directories of the volumes on one node: it offers the
// node's storage directory (a Node annotation), creates the directory of a
// new volume (mode 0777, so pods running as any user can write) and removes
// that of a released one. It runs in the node's own bramble with the
// kubelet's credentials and watches only the volumes labelled with its node.
type Node struct {
	cs      kubernetes.Interface
	name    string
	root    string
	log     *slog.Logger
	volumes cache.SharedIndexInformer
	queue   workloop.Queue
}

// NewNode prepares the controller of node name, whose volumes live in root.
func NewNode(cs kubernetes.Interface, name, root string, log *slog.Logger) (*Node, error) {
	n := &Node{cs: cs, name: name, root: root, log: log,
		queue: workloop.NewQueue()}
	n.volumes = informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = LabelNode + "=" + name
	})).Core().V1().PersistentVolumes().Informer()
	if err := n.volumes.SetTransform(slim.DropManagedFields); err != nil {
		return nil, fmt.Errorf("local storage: %w", err)
	}
	if _, err := n.volumes.AddEventHandler(enqueueOnChange(n.queue, "")); err != nil {
		return nil, fmt.Errorf("local storage: %w", err)
	}
	return n, nil
}

// Offer creates the storage directory and names it on the Node, retrying
// until the Node exists (the kubelet registers it).
func (n *Node) Offer(ctx context.Context) error {
	if err := os.MkdirAll(n.root, 0o700); err != nil {
		return fmt.Errorf("local storage: %w", err)
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnotationPath: n.root}}})
	if err != nil {
		return err
	}
	var last error
	err = wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		_, last = n.cs.CoreV1().Nodes().Patch(ctx, n.name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "bramble-local-storage"})
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("local storage: annotate node %s: %w", n.name, errors.Join(err, last))
	}
	return nil
}

// Run keeps the node's volume directories until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	if err := n.Offer(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer n.queue.ShutDown()
	go n.volumes.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), n.volumes.HasSynced) {
		return nil
	}
	work(ctx, n.queue, n.log, func(ctx context.Context, key string) error {
		obj, ok, err := n.volumes.GetStore().GetByKey(key)
		if err != nil || !ok {
			return err
		}
		return n.sync(ctx, obj.(*corev1.PersistentVolume))
	})
	return nil
}

func (n *Node) sync(ctx context.Context, pv *corev1.PersistentVolume) error {
	if pv.Annotations[AnnotationRemoved] == "true" {
		return nil
	}
	dir, err := ownedDir(n.root, pv)
	if err != nil {
		n.log.Warn("local storage: volume left alone", "err", err)
		return nil
	}
	if pv.Status.Phase != corev1.VolumeReleased {
		return createDir(dir)
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, AnnotationRemoved)
	_, err = n.cs.CoreV1().PersistentVolumes().Patch(ctx, pv.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "bramble-local-storage"})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("mark volume %s removed: %w", pv.Name, err)
	}
	n.log.Info("volume directory removed", "volume", pv.Name, "path", dir)
	return nil
}

// createDir creates a volume's directory, writable by any user of a pod
// (the directory is reachable only through the pod's mount: its parent is
// 0700).
func createDir(dir string) error {
	if err := os.Mkdir(dir, 0o777); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return nil
}
