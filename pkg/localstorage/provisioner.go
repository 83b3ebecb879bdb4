package localstorage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/bramble-pi/bramble/pkg/slim"
	"github.com/bramble-pi/bramble/pkg/workloop"
)

// Provisioner creates a volume for each claim of a local-path class once
// the scheduler picked its node (WaitForFirstConsumer), and deletes a
// released volume once its node removed the directory.
type Provisioner struct {
	cs       kubernetes.Interface
	log      *slog.Logger
	claims   cache.SharedIndexInformer
	volumes  cache.SharedIndexInformer
	queue    workloop.Queue
	events   record.EventBroadcaster
	recorder record.EventRecorder
}

// NewProvisioner watches claims and bramble's volumes through cs.
func NewProvisioner(cs kubernetes.Interface, log *slog.Logger) (*Provisioner, error) {
	p := &Provisioner{cs: cs, log: log,
		queue: workloop.NewQueue()}
	p.claims = informers.NewSharedInformerFactory(cs, 0).Core().V1().PersistentVolumeClaims().Informer()
	p.volumes = informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = LabelNode
	})).Core().V1().PersistentVolumes().Informer()
	for _, inf := range []cache.SharedIndexInformer{p.claims, p.volumes} {
		if err := inf.SetTransform(slim.DropManagedFields); err != nil {
			return nil, fmt.Errorf("local storage provisioner: %w", err)
		}
	}
	if _, err := p.claims.AddEventHandler(enqueueOnChange(p.queue, "pvc/")); err != nil {
		return nil, fmt.Errorf("local storage provisioner: %w", err)
	}
	if _, err := p.volumes.AddEventHandler(enqueueOnChange(p.queue, "pv/")); err != nil {
		return nil, fmt.Errorf("local storage provisioner: %w", err)
	}
	p.events = record.NewBroadcaster()
	p.recorder = p.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "bramble-local-path"})
	return p, nil
}

// Run provisions and deletes volumes until ctx ends.
func (p *Provisioner) Run(ctx context.Context) error {
	p.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: p.cs.CoreV1().Events("")})
	defer p.events.Shutdown()
	defer p.queue.ShutDown()
	go p.claims.Run(ctx.Done())
	go p.volumes.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), p.claims.HasSynced, p.volumes.HasSynced) {
		return nil
	}
	work(ctx, p.queue, p.log, p.sync)
	return nil
}

func (p *Provisioner) sync(ctx context.Context, key string) error {
	switch {
	case len(key) > 4 && key[:4] == "pvc/":
		obj, ok, err := p.claims.GetStore().GetByKey(key[4:])
		if err != nil || !ok {
			return err
		}
		return p.provision(ctx, obj.(*corev1.PersistentVolumeClaim))
	case len(key) > 3 && key[:3] == "pv/":
		obj, ok, err := p.volumes.GetStore().GetByKey(key[3:])
		if err != nil || !ok {
			return err
		}
		return p.deleteReleased(ctx, obj.(*corev1.PersistentVolume))
	}
	return nil
}

// wanted reports whether a claim waits for a volume from this provisioner
// on a node the scheduler picked.
func wanted(pvc *corev1.PersistentVolumeClaim) (node string, ok bool) {
	if pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil || pvc.Annotations[annStorageProvider] != ProvisionerName {
		return "", false
	}
	node = pvc.Annotations[annSelectedNode]
	return node, node != ""
}

// errWait is a condition that resolves by itself (retried, not an Event).
var errWait = errors.New("waiting")

func (p *Provisioner) provision(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	nodeName, ok := wanted(pvc)
	if !ok {
		return nil
	}
	name := volumePrefix + string(pvc.UID)
	if _, exists, _ := p.volumes.GetStore().GetByKey(name); exists {
		return nil
	}
	pv, err := p.volumeFor(ctx, pvc, name, nodeName)
	if err != nil {
		if !errors.Is(err, errWait) {
			p.recorder.Event(pvc, corev1.EventTypeWarning, "ProvisioningFailed", err.Error())
		}
		return err
	}
	if _, err := p.cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		p.recorder.Event(pvc, corev1.EventTypeWarning, "ProvisioningFailed", err.Error())
		return fmt.Errorf("create volume %s: %w", name, err)
	}
	p.log.Info("volume provisioned", "claim", pvc.Namespace+"/"+pvc.Name, "volume", name, "node", nodeName, "path", pv.Spec.HostPath.Path)
	p.recorder.Eventf(pvc, corev1.EventTypeNormal, "ProvisioningSucceeded", "volume %s: %s on node %s", name, pv.Spec.HostPath.Path, nodeName)
	return nil
}

// volumeFor is the volume of a claim: a directory under the node's storage
// directory, reachable only on that node.
func (p *Provisioner) volumeFor(ctx context.Context, pvc *corev1.PersistentVolumeClaim, name, nodeName string) (*corev1.PersistentVolume, error) {
	if pvc.Spec.Selector != nil {
		return nil, fmt.Errorf("claim %s/%s has a selector: %s cannot provision volumes that match labels", pvc.Namespace, pvc.Name, ProvisionerName)
	}
	if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		return nil, fmt.Errorf("claim %s/%s asks for a block volume: %s provides directories only", pvc.Namespace, pvc.Name, ProvisionerName)
	}
	if pvc.Spec.StorageClassName == nil {
		return nil, fmt.Errorf("claim %s/%s names no StorageClass", pvc.Namespace, pvc.Name)
	}
	class, err := p.cs.StorageV1().StorageClasses().Get(ctx, *pvc.Spec.StorageClassName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("StorageClass %s: %w", *pvc.Spec.StorageClassName, err)
	}
	node, err := p.cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", nodeName, err)
	}
	root := node.Annotations[AnnotationPath]
	if root == "" {
		return nil, fmt.Errorf("node %s does not offer local storage yet (its bramble sets the annotation %s): %w", nodeName, AnnotationPath, errWait)
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	hostname := node.Labels[corev1.LabelHostname]
	if hostname == "" {
		hostname = nodeName
	}
	dirOrCreate := corev1.HostPathDirectoryOrCreate
	fs := corev1.PersistentVolumeFilesystem
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{LabelNode: nodeName},
			Annotations: map[string]string{annProvisionedBy: ProvisionerName}},
		Spec: corev1.PersistentVolumeSpec{
			// Recorded, not enforced: a hostPath directory has no quota.
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: pvc.Spec.Resources.Requests[corev1.ResourceStorage]},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              class.Name,
			VolumeMode:                    &fs,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID, ResourceVersion: pvc.ResourceVersion},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: volumeDir(root, name, pvc.Namespace, pvc.Name), Type: &dirOrCreate}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{hostname}}},
			}}}},
		},
	}, nil
}

// deleteReleased deletes a released volume (reclaim policy Delete) once its
// node removed the directory.
func (p *Provisioner) deleteReleased(ctx context.Context, pv *corev1.PersistentVolume) error {
	if pv.Status.Phase != corev1.VolumeReleased || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete ||
		pv.Annotations[AnnotationRemoved] != "true" || pv.DeletionTimestamp != nil {
		return nil
	}
	uid := pv.UID
	err := p.cs.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete volume %s: %w", pv.Name, err)
	}
	p.log.Info("volume deleted", "volume", pv.Name, "node", pv.Labels[LabelNode])
	return nil
}
