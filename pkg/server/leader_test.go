package server

import (
	"context"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/pkg/supervisor"
)

// An elected controller is set up and runs only once the server leads;
// without an election (one server) it is left as it is.
func TestElected(t *testing.T) {
	setUp := make(chan struct{}, 1)
	comp := func() *supervisor.InProcess {
		return &supervisor.InProcess{ComponentName: "c", Setup: func(context.Context) (func(context.Context) error, error) {
			setUp <- struct{}{}
			return func(ctx context.Context) error { <-ctx.Done(); return nil }, nil
		}}
	}
	one := &ControlPlane{}
	if c := comp(); one.elected(c) != supervisor.Component(c) {
		t.Fatal("one server: the component was changed")
	}
	if one.elected(nil) != nil {
		t.Fatal("a disabled (nil) component became something")
	}

	cp := &ControlPlane{leader: &leader{leading: make(chan struct{})}}
	c := cp.elected(comp())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if err := c.Ready(rctx); err != nil {
		t.Fatalf("not ready while waiting for the lease: %v", err)
	}
	select {
	case <-setUp:
		t.Fatal("set up before leading")
	case <-time.After(100 * time.Millisecond):
	}
	close(cp.leader.leading)
	select {
	case <-setUp:
	case <-time.After(5 * time.Second):
		t.Fatal("not set up once leading")
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := c.Stop(sctx); err != nil {
		t.Fatal(err)
	}
}
