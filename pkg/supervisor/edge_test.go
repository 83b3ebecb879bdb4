package supervisor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bramble-pi/bramble/pkg/logging"
)

// runWith runs the components a, b, c (as change sets them up) under a
// supervisor with opts, and returns Run's error and the events.
func runWith(t *testing.T, ctx context.Context, change func(f []*fake), opts ...Option) (events string, err error) {
	t.Helper()
	fakes, comps, log := setup()
	change(fakes)
	readyCalled := false
	s := New(logging.Discard(), comps, append(opts, OnReady(func() { readyCalled = true }))...)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case err = <-done:
		if err != nil && readyCalled {
			t.Error("OnReady was called although Run failed")
		}
		return strings.Join(*log, " "), err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return "", nil
	}
}

func TestStartupFailures(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name       string
		change     func(f []*fake)
		opts       []Option
		wantErr    string
		wantEvents string
	}{
		{
			name:       "init fails: nothing after it starts, what started stops",
			change:     func(f []*fake) { f[1].initErr = boom },
			wantErr:    "b: init: boom",
			wantEvents: "a:init a:start a:ready b:init a:stop",
		},
		{
			name:       "start fails: it is not stopped, the ones before are",
			change:     func(f []*fake) { f[1].startErr = boom },
			wantErr:    "b: start: boom",
			wantEvents: "a:init a:start a:ready b:init b:start a:stop",
		},
		{
			name:       "not ready",
			change:     func(f []*fake) { f[1].ready = func(context.Context) error { return boom } },
			wantErr:    "b: not ready: boom",
			wantEvents: "a:init a:start a:ready b:init b:start b:ready b:stop a:stop",
		},
		{
			name: "not ready in time",
			change: func(f []*fake) {
				f[1].ready = func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
			},
			opts:       []Option{WithReadyTimeout(50 * time.Millisecond)},
			wantErr:    "b: not ready: context deadline exceeded",
			wantEvents: "a:init a:start a:ready b:init b:start b:ready b:stop a:stop",
		},
		{
			name: "an earlier component dies while a later one gets ready",
			change: func(f []*fake) {
				f[1].ready = func(ctx context.Context) error {
					f[0].die <- boom
					<-ctx.Done()
					return ctx.Err()
				}
			},
			wantErr:    "component a died: boom",
			wantEvents: "a:init a:start a:ready b:init b:start b:ready b:stop a:stop",
		},
		{
			name: "a component that ends without an error is a death too",
			change: func(f []*fake) {
				f[2].ready = func(ctx context.Context) error {
					close(f[1].die)
					<-ctx.Done()
					return ctx.Err()
				}
			},
			wantErr: "component b exited unexpectedly",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, err := runWith(t, context.Background(), tt.change, tt.opts...)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("Run = %v, want %q", err, tt.wantErr)
			}
			if tt.wantEvents != "" && events != tt.wantEvents {
				t.Errorf("events\n got %s\nwant %s", events, tt.wantEvents)
			}
		})
	}
}

// TestCancelWhileStarting: SIGTERM while a component is getting ready is a
// clean stop, not a failure.
func TestCancelWhileStarting(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	events, err := runWith(t, ctx, func(f []*fake) {
		f[1].ready = func(rctx context.Context) error {
			cancel()
			<-rctx.Done()
			return rctx.Err()
		}
	})
	if err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if want := "a:init a:start a:ready b:init b:start b:ready b:stop a:stop"; events != want {
		t.Errorf("events\n got %s\nwant %s", events, want)
	}
}

// TestStopTimeout: a component that does not stop holds the shutdown no
// longer than the stop timeout, and the others are still stopped.
func TestStopTimeout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	begin := time.Now()
	events, err := runWith(t, ctx, func(f []*fake) {
		f[2].stopHangs = true
		f[2].ready = func(context.Context) error { cancel(); return nil }
	}, WithStopTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatalf("Run = %v", err)
	}
	if !strings.HasSuffix(events, "c:stop b:stop a:stop") {
		t.Errorf("events %s: want every component stopped", events)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("shutdown took %v with a 100ms stop timeout", d)
	}
}

func TestInProcess(t *testing.T) {
	t.Run("setup error is a death naming the component", func(t *testing.T) {
		c := &InProcess{ComponentName: "kube-x", Setup: func(context.Context) (func(context.Context) error, error) {
			return nil, errors.New("bad flags")
		}}
		err := New(logging.Discard(), []Component{c}).Run(context.Background())
		if err == nil || err.Error() != "component kube-x died: set up: bad flags" {
			t.Fatalf("Run = %v", err)
		}
	})
	t.Run("Check gates readiness", func(t *testing.T) {
		checked := make(chan struct{})
		c := &InProcess{ComponentName: "kube-x",
			Setup: func(context.Context) (func(context.Context) error, error) {
				return func(ctx context.Context) error { <-ctx.Done(); return nil }, nil
			},
			Check: func(context.Context) error { close(checked); return errors.New("503") },
		}
		err := New(logging.Discard(), []Component{c}).Run(context.Background())
		<-checked
		if err == nil || err.Error() != "kube-x: not ready: 503" {
			t.Fatalf("Run = %v", err)
		}
	})
	t.Run("StopWait bounds a run function that ignores its context", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		c := &InProcess{ComponentName: "kubelet", StopWait: 20 * time.Millisecond,
			Setup: func(context.Context) (func(context.Context) error, error) {
				return func(context.Context) error { <-release; return nil }, nil
			},
		}
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := c.Ready(context.Background()); err != nil {
			t.Fatal(err)
		}
		err := c.Stop(context.Background())
		if err == nil || !strings.Contains(err.Error(), "still running after stop deadline") {
			t.Fatalf("Stop = %v", err)
		}
	})
	t.Run("Ready gives up with its context before Setup ends", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		c := &InProcess{ComponentName: "slow", Setup: func(context.Context) (func(context.Context) error, error) {
			<-release
			return func(context.Context) error { return nil }, nil
		}}
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := c.Ready(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Ready = %v", err)
		}
	})
}

func TestRunnerStop(t *testing.T) {
	var unused Runner
	if err := unused.Stop(context.Background()); err != nil {
		t.Errorf("Stop before Go = %v", err)
	}
	var r Runner
	r.Go(context.Background(), func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	for i := range 2 {
		if err := r.Stop(context.Background()); err != nil {
			t.Errorf("Stop #%d = %v", i+1, err)
		}
	}
	if err := <-r.Exited(); !errors.Is(err, context.Canceled) {
		t.Errorf("Exited = %v", err)
	}
}
