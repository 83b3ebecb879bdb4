package metricsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	discoveryv1ac "k8s.io/client-go/applyconfigurations/discovery/v1"
	apiregv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	apiregv1ac "k8s.io/kube-aggregator/pkg/client/applyconfiguration/apiregistration/v1"
)

const (
	fieldManager = "bramble-metrics-server"
	servicePort  = 443
	portName     = "https"
)

var labels = map[string]string{"app.kubernetes.io/managed-by": "bramble", "app.kubernetes.io/name": "metrics-server"}

// Register points metrics.k8s.io at the server listening on addr:port: a
// Service without selector, its one EndpointSlice (addr) and the APIService,
// which trusts caBundle for the server's certificate. The apiserver must
// route to endpoints (--enable-aggregator-routing): the Service's cluster IP
// needs a kube-proxy, which a server without agent does not run.
func Register(ctx context.Context, c Clients, addr net.IP, port int, caBundle []byte) error {
	opts := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	svc := corev1ac.Service(ServiceName, Namespace).WithLabels(labels).
		WithSpec(corev1ac.ServiceSpec().WithPorts(corev1ac.ServicePort().
			WithName(portName).WithProtocol(corev1.ProtocolTCP).WithPort(servicePort).WithTargetPort(intstr.FromInt32(int32(port)))))
	if _, err := c.Core.CoreV1().Services(Namespace).Apply(ctx, svc, opts); err != nil {
		return fmt.Errorf("metrics-server Service: %w", err)
	}
	family := discoveryv1.AddressTypeIPv4
	if addr.To4() == nil {
		family = discoveryv1.AddressTypeIPv6
	}
	sliceLabels := map[string]string{discoveryv1.LabelServiceName: ServiceName, discoveryv1.LabelManagedBy: "bramble"}
	for k, v := range labels {
		if _, ok := sliceLabels[k]; !ok {
			sliceLabels[k] = v
		}
	}
	slice := discoveryv1ac.EndpointSlice(ServiceName, Namespace).WithLabels(sliceLabels).WithAddressType(family).
		WithEndpoints(discoveryv1ac.Endpoint().WithAddresses(addr.String()).WithConditions(discoveryv1ac.EndpointConditions().WithReady(true))).
		WithPorts(discoveryv1ac.EndpointPort().WithName(portName).WithProtocol(corev1.ProtocolTCP).WithPort(int32(port)))
	if _, err := c.Core.DiscoveryV1().EndpointSlices(Namespace).Apply(ctx, slice, opts); err != nil {
		return fmt.Errorf("metrics-server EndpointSlice: %w", err)
	}
	api := apiregv1ac.APIService(APIService).WithLabels(labels).WithSpec(apiregv1ac.APIServiceSpec().
		WithService(apiregv1ac.ServiceReference().WithNamespace(Namespace).WithName(ServiceName).WithPort(servicePort)).
		WithGroup("metrics.k8s.io").WithVersion("v1beta1").
		WithCABundle(caBundle...).
		WithGroupPriorityMinimum(100).WithVersionPriority(100))
	if _, err := c.Aggregator.ApiregistrationV1().APIServices().Apply(ctx, api, opts); err != nil {
		return fmt.Errorf("metrics-server APIService: %w", err)
	}
	return nil
}

// Unregister removes what Register wrote (with --disable metrics-server:
// an APIService nobody serves makes every client's discovery fail). Only
// bramble's objects go: a user who disables the add-on may run an upstream
// metrics-server under the same names.
func Unregister(ctx context.Context, c Clients) error {
	api := c.Aggregator.ApiregistrationV1().APIServices()
	slices := c.Core.DiscoveryV1().EndpointSlices(Namespace)
	svcs := c.Core.CoreV1().Services(Namespace)
	errs := []error{
		deleteOwn(ctx, APIService, func(ctx context.Context) (metav1.Object, error) { return api.Get(ctx, APIService, metav1.GetOptions{}) }, api.Delete),
		deleteOwn(ctx, ServiceName, func(ctx context.Context) (metav1.Object, error) {
			return slices.Get(ctx, ServiceName, metav1.GetOptions{})
		}, slices.Delete),
		deleteOwn(ctx, ServiceName, func(ctx context.Context) (metav1.Object, error) {
			return svcs.Get(ctx, ServiceName, metav1.GetOptions{})
		}, svcs.Delete),
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove the metrics-server registration: %w", err)
	}
	return nil
}

// deleteOwn deletes the object if it carries bramble's labels (UID
// precondition: not a newer object of the same name).
func deleteOwn(ctx context.Context, name string, get func(context.Context) (metav1.Object, error), del func(context.Context, string, metav1.DeleteOptions) error) error {
	obj, err := get(ctx)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	for k, v := range labels {
		if obj.GetLabels()[k] != v {
			return nil
		}
	}
	uid := obj.GetUID()
	if err := del(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// WaitAvailable waits until the aggregation layer reports the APIService
// Available (it reaches the server and its discovery answers).
func WaitAvailable(ctx context.Context, c Clients, timeout time.Duration) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		api, err := c.Aggregator.ApiregistrationV1().APIServices().Get(ctx, APIService, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, cond := range api.Status.Conditions {
			if cond.Type == apiregv1.Available {
				last = cond.Message
				return cond.Status == apiregv1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("APIService %s not available (%s): %w", APIService, last, err)
	}
	return nil
}
