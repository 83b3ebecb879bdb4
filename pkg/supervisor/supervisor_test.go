package supervisor

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/pkg/logging"
)

type fake struct {
	name   string
	events *[]string
	mu     *sync.Mutex
	runner Runner
	die    chan error
	// Optional behaviour for the edge cases.
	initErr, startErr error
	ready             func(ctx context.Context) error // nil: ready at once
	stopHangs         bool                            // Stop waits for its deadline
}

func (f *fake) record(e string) {
	f.mu.Lock()
	*f.events = append(*f.events, f.name+":"+e)
	f.mu.Unlock()
}
func (f *fake) Name() string { return f.name }
func (f *fake) Init(context.Context) error {
	f.record("init")
	return f.initErr
}
func (f *fake) Start(ctx context.Context) error {
	f.record("start")
	if f.startErr != nil {
		return f.startErr
	}
	f.runner.Go(ctx, func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return nil
		case err := <-f.die:
			return err
		}
	})
	return nil
}
func (f *fake) Ready(ctx context.Context) error {
	f.record("ready")
	if f.ready != nil {
		return f.ready(ctx)
	}
	return nil
}
func (f *fake) Stop(ctx context.Context) error {
	f.record("stop")
	if f.stopHangs {
		<-ctx.Done()
		return ctx.Err()
	}
	return f.runner.Stop(ctx)
}
func (f *fake) Exited() <-chan error { return f.runner.Exited() }

func setup() ([]*fake, []Component, *[]string) {
	var events []string
	mu := &sync.Mutex{}
	var fakes []*fake
	var comps []Component
	for _, n := range []string{"a", "b", "c"} {
		f := &fake{name: n, events: &events, mu: mu, die: make(chan error, 1)}
		fakes = append(fakes, f)
		comps = append(comps, f)
	}
	return fakes, comps, &events
}

func TestOrderAndCleanStop(t *testing.T) {
	_, comps, events := setup()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	s := New(logging.Discard(), comps, OnReady(func() { close(ready) }))
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	<-ready
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("clean stop returned %v", err)
	}
	want := "a:init a:start a:ready b:init b:start b:ready c:init c:start c:ready c:stop b:stop a:stop"
	if got := strings.Join(*events, " "); got != want {
		t.Fatalf("events\n got %s\nwant %s", got, want)
	}
}

func TestDeathStopsEverything(t *testing.T) {
	fakes, comps, events := setup()
	ready := make(chan struct{})
	s := New(logging.Discard(), comps, OnReady(func() { close(ready) }))
	done := make(chan error)
	go func() { done <- s.Run(context.Background()) }()
	<-ready
	fakes[1].die <- errors.New("boom")
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "component b died: boom") {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("supervisor did not notice a dead component")
	}
	if got := strings.Join((*events)[9:], " "); got != "c:stop b:stop a:stop" {
		t.Fatalf("stop order %s", got)
	}
}

// A SelfBounded InProcess may take longer than the ready timeout; another
// may not.
func TestSelfBoundedInProcess(t *testing.T) {
	for _, bounded := range []bool{true, false} {
		slow := &InProcess{ComponentName: "slow", SelfBounded: bounded, Setup: func(ctx context.Context) (func(context.Context) error, error) {
			time.Sleep(300 * time.Millisecond)
			return func(ctx context.Context) error { <-ctx.Done(); return nil }, nil
		}}
		ready := make(chan struct{})
		s := New(logging.Discard(), []Component{slow}, WithReadyTimeout(50*time.Millisecond), OnReady(func() { close(ready) }))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		select {
		case <-ready:
			if !bounded {
				t.Fatal("a slow component without SelfBounded became ready after the ready timeout")
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		case err := <-done:
			if bounded || err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
				t.Fatalf("SelfBounded=%v: Run returned %v", bounded, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("neither ready nor failed")
		}
		cancel()
	}
}
