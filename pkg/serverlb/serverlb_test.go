package serverlb

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// echoServer answers each line with its name and the line.
func echoServer(t *testing.T, name string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprintf(c, "%s:%s", name, line)
				}
			}()
		}
	}()
	return l
}

func ask(t *testing.T, lb *LB) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", lb.listener.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "hi\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "error: " + err.Error()
	}
	return line
}

// Connections go to the joined server, and to another listed one once it
// stops answering; they stay there.
func TestFailover(t *testing.T) {
	a, b := echoServer(t, "a"), echoServer(t, "b")
	defer b.Close()
	lb, err := Listen(0, a.Addr().String(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lb.Run(ctx) }()
	if got := ask(t, lb); got != "a:hi\n" {
		t.Fatalf("first answer %q", got)
	}
	lb.SetServers([]string{b.Addr().String(), a.Addr().String()})
	if got := lb.Servers(); len(got) != 2 || got[0] != a.Addr().String() {
		t.Fatalf("servers %v: the joined one first, no duplicates", got)
	}
	if got := ask(t, lb); got != "a:hi\n" {
		t.Fatalf("the answering server changed: %q", got)
	}
	a.Close()
	if got := ask(t, lb); got != "b:hi\n" {
		t.Fatalf("after a stopped: %q", got)
	}
	if lb.candidates()[0] != b.Addr().String() {
		t.Fatal("b is not tried first now")
	}
	lb.SetServers(nil)
	if got := lb.Servers(); len(got) != 1 {
		t.Fatalf("the joined server was dropped: %v", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestApiservers(t *testing.T) {
	port, https, other := int32(6443), "https", "metrics"
	yes, no := true, false
	cs := fake.NewClientset(&discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes"}},
		Ports:      []discoveryv1.EndpointPort{{Name: &https, Port: &port}, {Name: &other, Port: new(int32)}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.0.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}},
			{Addresses: []string{"10.0.0.1"}},
			{Addresses: []string{"10.0.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: &no}},
		},
	}, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "other"}},
		Ports: []discoveryv1.EndpointPort{{Name: &https, Port: &port}}, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.9.9.9"}}}})
	got, err := apiservers(context.Background(), cs)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[10.0.0.1:6443 10.0.0.2:6443]" {
		t.Fatalf("apiservers = %v", got)
	}
}
