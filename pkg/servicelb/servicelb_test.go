package servicelb

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name, ip string, labels map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}}}
}

func TestNodeIPs(t *testing.T) {
	nodes := []*corev1.Node{node("b", "10.0.0.2", nil), node("a", "10.0.0.1", nil)}
	if got := NodeIPs(nodes); !slices.Equal(got, []string{"10.0.0.1", "10.0.0.2"}) {
		t.Errorf("every node: %q", got)
	}
	nodes = append(nodes, node("c", "10.0.0.3", map[string]string{LabelEnable: "true"}))
	if got := NodeIPs(nodes); !slices.Equal(got, []string{"10.0.0.3"}) {
		t.Errorf("labelled nodes only: %q", got)
	}
}

func lb(name string, age time.Duration, ports ...int32) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, CreationTimestamp: metav1.NewTime(time.Unix(1e9, 0).Add(-age))},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Port: p})
	}
	return s
}

func TestAssign(t *testing.T) {
	old, young, other := lb("old", time.Hour, 8080), lb("young", time.Minute, 8080, 9090), lb("other", 0, 9090)
	udp := lb("udp", 0, 8080)
	udp.Spec.Ports[0].Protocol = corev1.ProtocolUDP
	plain := lb("plain", 2*time.Hour, 8080)
	plain.Spec.Type = corev1.ServiceTypeClusterIP
	admitted, blocked := Assign([]*corev1.Service{young, other, udp, plain, old})
	var names []string
	for _, s := range admitted {
		names = append(names, s.Name)
	}
	// young is blocked by old, so 9090 stays free for other.
	if want := []string{"old", "other", "udp"}; !slices.Equal(names, want) {
		t.Errorf("admitted %q, want %q", names, want)
	}
	if len(blocked) != 1 || !strings.Contains(blocked[young], "8080/TCP is used by LoadBalancer Service ns/old") {
		t.Errorf("blocked: %v", blocked)
	}
}
