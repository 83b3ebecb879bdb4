// Package servicelb gives LoadBalancer Services an address without a load
// balancer and without pods: a controller in the server writes the node
// IPs into status.loadBalancer.ingress, and every node's kube-proxy then
// forwards <node IP>:<port> to the Service (it programs the ingress IPs of
// a Service like its cluster IP). The nodes labelled LabelEnable=true are
// used when any node has that label, every node otherwise. A port (and
// protocol) belongs to the oldest LoadBalancer Service asking for it; a
// later one stays pending with an Event until the port is free.
package servicelb

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

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

// LabelEnable on a node limits the LoadBalancer addresses to the nodes
// that carry it with the value "true".
const LabelEnable = "svccontroller.bramble.io/enablelb"

// Controller keeps the status of the LoadBalancer Services.
type Controller struct {
	cs       kubernetes.Interface
	log      *slog.Logger
	services cache.SharedIndexInformer
	nodes    cache.SharedIndexInformer
	queue    workloop.Queue
	events   record.EventBroadcaster
	recorder record.EventRecorder
	// blocked is the reason each pending Service was last given (one
	// Event per reason, not one per sync). Used by the one worker only.
	blocked map[string]string
}

// New watches Services and Nodes through cs.
func New(cs kubernetes.Interface, log *slog.Logger) (*Controller, error) {
	f := informers.NewSharedInformerFactory(cs, 0)
	c := &Controller{cs: cs, log: log, blocked: map[string]string{},
		services: f.Core().V1().Services().Informer(),
		nodes:    f.Core().V1().Nodes().Informer(),
		queue:    workloop.NewQueue(),
	}
	// The cache keeps what the controller reads: a Node's labels and
	// addresses (not its image list), no managed fields.
	if err := c.nodes.SetTransform(slimNode); err != nil {
		return nil, fmt.Errorf("service load balancer: %w", err)
	}
	if err := c.services.SetTransform(slim.DropManagedFields); err != nil {
		return nil, fmt.Errorf("service load balancer: %w", err)
	}
	// Every change leads to one pass over all LoadBalancer Services: ports
	// are shared, and a small cluster has few of them.
	all := func(any) { c.queue.Add("all") }
	for _, inf := range []cache.SharedIndexInformer{c.services, c.nodes} {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: all, UpdateFunc: func(_, o any) { all(o) }, DeleteFunc: all}); err != nil {
			return nil, fmt.Errorf("service load balancer: %w", err)
		}
	}
	c.events = record.NewBroadcaster()
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "bramble-servicelb"})
	return c, nil
}

// Run keeps the Services' status until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	c.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.cs.CoreV1().Events("")})
	defer c.events.Shutdown()
	defer c.queue.ShutDown()
	go c.services.Run(ctx.Done())
	go c.nodes.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.services.HasSynced, c.nodes.HasSynced) {
		return nil
	}
	workloop.Run(ctx, c.queue, func(ctx context.Context, _ string) error { return c.sync(ctx) }, func(_ string, err error) {
		c.log.Warn("service load balancer: retrying", "err", err)
	})
	return nil
}

// NodeIPs are the addresses LoadBalancer Services get: the InternalIPs of
// the nodes labelled LabelEnable=true if any is, else of every node.
func NodeIPs(nodes []*corev1.Node) []string {
	labelled := slices.ContainsFunc(nodes, func(n *corev1.Node) bool { return n.Labels[LabelEnable] == "true" })
	var ips []string
	for _, n := range nodes {
		if n.DeletionTimestamp != nil || (labelled && n.Labels[LabelEnable] != "true") {
			continue
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && net.ParseIP(a.Address) != nil {
				ips = append(ips, a.Address)
			}
		}
	}
	sort.Strings(ips)
	return slices.Compact(ips)
}

// Assign decides which LoadBalancer Services get the addresses: the oldest
// Service asking for a port and protocol has it; a later one that asks for
// a taken port is blocked, with the reason.
func Assign(services []*corev1.Service) (admitted []*corev1.Service, blocked map[*corev1.Service]string) {
	lbs := slices.DeleteFunc(slices.Clone(services), func(s *corev1.Service) bool { return !wanted(s) })
	slices.SortFunc(lbs, func(a, b *corev1.Service) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	owner := map[string]*corev1.Service{}
	blocked = map[*corev1.Service]string{}
	for _, s := range lbs {
		var taken []string
		for _, p := range s.Spec.Ports {
			if o, ok := owner[portKey(p)]; ok {
				taken = append(taken, fmt.Sprintf("port %s is used by LoadBalancer Service %s/%s", portKey(p), o.Namespace, o.Name))
			}
		}
		if len(taken) > 0 {
			blocked[s] = strings.Join(taken, "; ")
			continue
		}
		for _, p := range s.Spec.Ports {
			owner[portKey(p)] = s
		}
		admitted = append(admitted, s)
	}
	return admitted, blocked
}

func portKey(p corev1.ServicePort) string {
	proto := p.Protocol
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	return fmt.Sprintf("%d/%s", p.Port, proto)
}

// wanted: a LoadBalancer Service that asks for no other load balancer
// implementation.
func wanted(s *corev1.Service) bool {
	return s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Spec.LoadBalancerClass == nil && s.DeletionTimestamp == nil
}

func (c *Controller) sync(ctx context.Context) error {
	var nodes []*corev1.Node
	for _, o := range c.nodes.GetStore().List() {
		nodes = append(nodes, o.(*corev1.Node))
	}
	var services []*corev1.Service
	for _, o := range c.services.GetStore().List() {
		services = append(services, o.(*corev1.Service))
	}
	ips := NodeIPs(nodes)
	admitted, blocked := Assign(services)
	var errs []error
	seen := map[string]bool{}
	for _, s := range admitted {
		key := s.Namespace + "/" + s.Name
		seen[key] = true
		if _, was := c.blocked[key]; was {
			delete(c.blocked, key)
			c.recorder.Event(s, corev1.EventTypeNormal, "PortsFree", "its ports are free: the node addresses are assigned")
		}
		if err := c.setIngress(ctx, s, ips); err != nil {
			errs = append(errs, err)
		}
	}
	for s, why := range blocked {
		key := s.Namespace + "/" + s.Name
		seen[key] = true
		if c.blocked[key] != why {
			c.blocked[key] = why
			c.recorder.Event(s, corev1.EventTypeWarning, "PortInUse", "no address: "+why)
			c.log.Info("LoadBalancer Service pending: port in use", "service", key, "why", why)
		}
		if err := c.setIngress(ctx, s, nil); err != nil {
			errs = append(errs, err)
		}
	}
	for key := range c.blocked {
		if !seen[key] {
			delete(c.blocked, key)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("update Service status: %w", errs[0])
	}
	return nil
}

// setIngress writes the addresses into the Service's status if they differ.
func (c *Controller) setIngress(ctx context.Context, s *corev1.Service, ips []string) error {
	var ingress []corev1.LoadBalancerIngress
	vip := corev1.LoadBalancerIPModeVIP
	for _, ip := range ips {
		ingress = append(ingress, corev1.LoadBalancerIngress{IP: ip, IPMode: &vip})
	}
	cur := s.Status.LoadBalancer.Ingress
	if len(cur) == len(ingress) && slices.EqualFunc(cur, ingress, func(a, b corev1.LoadBalancerIngress) bool {
		return a.IP == b.IP && a.Hostname == "" && len(a.Ports) == 0
	}) {
		return nil
	}
	s = s.DeepCopy()
	s.Status.LoadBalancer.Ingress = ingress
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := c.cs.CoreV1().Services(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{FieldManager: fieldManager})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s/%s: %w", s.Namespace, s.Name, err)
	}
	if err == nil {
		c.log.Info("LoadBalancer Service addresses", "service", s.Namespace+"/"+s.Name, "ips", strings.Join(ips, ","))
	}
	return nil
}

// fieldManager names the controller's status writes (managedFields).
const fieldManager = "bramble-servicelb"

// Release takes the addresses this controller wrote off every Service
// (with --disable servicelb, so that kube-proxy stops forwarding them).
func Release(ctx context.Context, cs kubernetes.Interface, log *slog.Logger) error {
	list, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("servicelb off: list Services: %w", err)
	}
	for i := range list.Items {
		s := &list.Items[i]
		if len(s.Status.LoadBalancer.Ingress) == 0 || !slices.ContainsFunc(s.ManagedFields, func(m metav1.ManagedFieldsEntry) bool {
			return m.Manager == fieldManager && m.Subresource == "status"
		}) {
			continue
		}
		s.Status.LoadBalancer.Ingress = nil
		if _, err := cs.CoreV1().Services(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{FieldManager: fieldManager}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("servicelb off: %s/%s: %w", s.Namespace, s.Name, err)
		}
		log.Info("servicelb disabled: LoadBalancer Service addresses removed", "service", s.Namespace+"/"+s.Name)
	}
	return nil
}

func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Namespace: n.Namespace, UID: n.UID, ResourceVersion: n.ResourceVersion,
		Labels: n.Labels, DeletionTimestamp: n.DeletionTimestamp}, Status: corev1.NodeStatus{Addresses: n.Status.Addresses}}, nil
}
