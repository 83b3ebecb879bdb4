package supervisor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/pkg/logging"
)

// a runs in the background while b starts; c waits for a.
func TestBackgroundRunsAlongside(t *testing.T) {
	fakes, _, events := setup()
	a, b, c := fakes[0], fakes[1], fakes[2]
	aMayBeReady := make(chan struct{})
	a.ready = func(ctx context.Context) error {
		select {
		case <-aMayBeReady:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	bg := NewBackground("bg", a)
	b.ready = func(context.Context) error { close(aMayBeReady); return nil }
	ready := make(chan struct{})
	s := New(logging.Discard(), []Component{bg, b, bg.Wait(), c}, OnReady(func() { close(ready) }))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("b never started while a was not ready: Background blocked the list")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := strings.Join(*events, " ")
	if !strings.HasSuffix(got, "c:init c:start c:ready c:stop b:stop a:stop") {
		t.Fatalf("events %s", got)
	}
}

func TestBackgroundFailureStopsEverything(t *testing.T) {
	fakes, _, _ := setup()
	a, b := fakes[0], fakes[1]
	a.ready = func(context.Context) error { return errors.New("no socket") }
	bg := NewBackground("bg", a)
	s := New(logging.Discard(), []Component{bg, b, bg.Wait()})
	done := make(chan error)
	go func() { done <- s.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "a: not ready: no socket") {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a background start-up failure went unnoticed")
	}
}

func TestBackgroundDeathIsNamed(t *testing.T) {
	fakes, _, _ := setup()
	a, b := fakes[0], fakes[1]
	bg := NewBackground("bg", a)
	ready := make(chan struct{})
	s := New(logging.Discard(), []Component{bg, b, bg.Wait()}, OnReady(func() { close(ready) }))
	done := make(chan error)
	go func() { done <- s.Run(context.Background()) }()
	<-ready
	a.die <- errors.New("killed")
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "bg died: a: killed") {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a background component's death went unnoticed")
	}
}

// The ready timeout bounds each component, not the wait for a background
// start-up that is slower than it (an image import on a slow machine).
func TestBackgroundWaitOutlastsReadyTimeout(t *testing.T) {
	fakes, _, _ := setup()
	a, b := fakes[0], fakes[1]
	a.ready = func(ctx context.Context) error {
		select {
		case <-time.After(300 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	bg := NewBackground("bg", a)
	ready := make(chan struct{})
	s := New(logging.Discard(), []Component{bg, b, bg.Wait()}, WithReadyTimeout(50*time.Millisecond), OnReady(func() { close(ready) }))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run ended before ready: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("never ready")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
