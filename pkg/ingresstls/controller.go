package ingresstls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	networkinginformers "k8s.io/client-go/informers/networking/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"

	"github.com/bramble-pi/bramble/pkg/slim"
	"github.com/bramble-pi/bramble/pkg/workloop"
)

// Controller keeps Label on exactly the Secrets that Ingresses of their
// namespace name for TLS (and that hold tls.crt and tls.key). It reads
// Secrets as metadata only (no Secret data in its cache) and fetches a
// Secret's data only to check that a newly referenced one is a TLS Secret.
type Controller struct {
	core      kubernetes.Interface
	log       *slog.Logger
	ingresses cache.SharedIndexInformer
	secrets   cache.SharedIndexInformer
	queue     workloop.Queue // namespaces
	synced    atomic.Bool
	// act, when set, holds back the writes until it is closed (the server
	// leads; the cache, which the apiserver's filter reads, runs at once).
	act <-chan struct{}
	// notTLS remembers referenced Secrets found without tls.crt/tls.key,
	// by namespace/name, at the resourceVersion seen: not fetched again
	// until they change. Used by the one worker only.
	notTLS map[string]string
}

// New connects a controller to the apiserver the kubeconfig names.
func New(kubeconfig string, log *slog.Logger) (*Controller, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("ingress TLS controller: kubeconfig: %w", err)
	}
	core, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("ingress TLS controller: %w", err)
	}
	md, err := metadata.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("ingress TLS controller: %w", err)
	}
	c := &Controller{core: core, log: log, notTLS: map[string]string{},
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())}
	byNamespace := cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}
	c.ingresses = networkinginformers.NewIngressInformer(core, metav1.NamespaceAll, 0, byNamespace)
	c.secrets = metadatainformer.NewFilteredMetadataInformer(md, corev1.SchemeGroupVersion.WithResource("secrets"),
		metav1.NamespaceAll, 0, byNamespace, nil).Informer()
	for _, inf := range []cache.SharedIndexInformer{c.ingresses, c.secrets} {
		if err := inf.SetTransform(slim.DropManagedFields); err != nil {
			return nil, fmt.Errorf("ingress TLS controller: %w", err)
		}
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    c.enqueue,
			UpdateFunc: func(_, obj any) { c.enqueue(obj) },
			DeleteFunc: c.enqueue,
		}); err != nil {
			return nil, fmt.Errorf("ingress TLS controller: %w", err)
		}
	}
	return c, nil
}

// enqueue queues the namespace of an Ingress or Secret that changed.
func (c *Controller) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	if ns, _, err := cache.SplitMetaNamespaceKey(key); err == nil && ns != "" {
		c.queue.Add(ns)
	}
}

// Labelled reports whether the Secret carries Label=true (false until the
// controller's cache has synced).
func (c *Controller) Labelled(namespace, name string) bool {
	if !c.synced.Load() {
		return false
	}
	obj, ok, err := c.secrets.GetStore().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return false
	}
	m, ok := obj.(metav1.Object)
	return ok && m.GetLabels()[Label] == "true"
}

// ActAfter holds the controller's writes back until act is closed (with
// several servers, only the elected one labels); its cache serves at once.
// Call it before Run.
func (c *Controller) ActAfter(act <-chan struct{}) { c.act = act }

// Run keeps the labels right until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	go c.ingresses.Run(ctx.Done())
	go c.secrets.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.ingresses.HasSynced, c.secrets.HasSynced) {
		return nil // ctx ended
	}
	c.synced.Store(true)
	if c.act != nil {
		select {
		case <-c.act:
		case <-ctx.Done():
			return nil
		}
	}
	workloop.Run(ctx, c.queue, c.sync, func(ns string, err error) {
		c.log.Warn("ingress TLS secrets: retrying", "namespace", ns, "err", err)
	})
	return nil
}

// referenced are the Secrets the Ingresses of a namespace name for TLS.
func referenced(ingresses []any) map[string]bool {
	refs := map[string]bool{}
	for _, obj := range ingresses {
		ing, ok := obj.(*networkingv1.Ingress)
		if !ok {
			continue
		}
		for _, t := range ing.Spec.TLS {
			if t.SecretName != "" {
				refs[t.SecretName] = true
			}
		}
	}
	return refs
}

// sync labels the namespace's referenced TLS Secrets and unlabels the rest.
func (c *Controller) sync(ctx context.Context, ns string) error {
	ings, err := c.ingresses.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
	if err != nil {
		return err
	}
	refs := referenced(ings)
	secrets, err := c.secrets.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
	if err != nil {
		return err
	}
	var errs []error
	for _, obj := range secrets {
		m, ok := obj.(metav1.Object)
		if !ok {
			continue
		}
		value, has := m.GetLabels()[Label]
		switch {
		case refs[m.GetName()] && value != "true":
			errs = append(errs, c.label(ctx, m))
		case !refs[m.GetName()] && has:
			errs = append(errs, c.patch(ctx, ns, m.GetName(), `{"metadata":{"labels":{"`+Label+`":null}}}`))
			if errs[len(errs)-1] == nil {
				c.log.Info("Secret no longer referenced by an Ingress: Traefik cannot read it any more", "namespace", ns, "secret", m.GetName())
			}
		}
	}
	for key := range c.notTLS {
		if kns, name, _ := cache.SplitMetaNamespaceKey(key); kns == ns && !refs[name] {
			delete(c.notTLS, key)
		}
	}
	return errors.Join(errs...)
}

// label gives a referenced Secret the label if it is a TLS Secret. The
// patch carries the resourceVersion whose data was checked.
func (c *Controller) label(ctx context.Context, m metav1.Object) error {
	key := m.GetNamespace() + "/" + m.GetName()
	if rv, ok := c.notTLS[key]; ok && rv == m.GetResourceVersion() {
		return nil
	}
	s, err := c.core.CoreV1().Secrets(m.GetNamespace()).Get(ctx, m.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get Secret %s: %w", key, err)
	}
	if len(s.Data[corev1.TLSCertKey]) == 0 || len(s.Data[corev1.TLSPrivateKeyKey]) == 0 {
		c.notTLS[key] = s.ResourceVersion
		c.log.Warn("an Ingress names a Secret without tls.crt and tls.key: not given to Traefik", "namespace", s.Namespace, "secret", s.Name)
		return nil
	}
	patch := fmt.Sprintf(`{"metadata":{"resourceVersion":%q,"labels":{%q:"true"}}}`, s.ResourceVersion, Label)
	if err := c.patch(ctx, s.Namespace, s.Name, patch); err != nil {
		return err
	}
	c.log.Info("TLS Secret referenced by an Ingress: Traefik can read it", "namespace", s.Namespace, "secret", s.Name)
	return nil
}

func (c *Controller) patch(ctx context.Context, ns, name, patch string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := c.core.CoreV1().Secrets(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "bramble-ingress-tls"})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("label Secret %s/%s: %w", ns, name, err)
	}
	return nil
}
