package supervisor

import (
	"context"
	"fmt"
	"sync"
)

// Runner runs one blocking function in a goroutine under its own context: the
// building block for in-process components whose Run(ctx) blocks until ctx ends.
// The zero value is not usable; call Go.
type Runner struct {
	cancel context.CancelFunc
	done   chan struct{}
	exited chan error
	once   sync.Once
	err    error
}

// Go starts fn(ctx) in a goroutine with a context derived from parent.
func (r *Runner) Go(parent context.Context, fn func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(parent)
	r.cancel = cancel
	r.done = make(chan struct{})
	r.exited = make(chan error, 1)
	go func() {
		defer close(r.done)
		err := fn(ctx)
		r.err = err
		r.exited <- err
	}()
}

// Exited delivers fn's result once it returns.
func (r *Runner) Exited() <-chan error { return r.exited }

// Done is closed when fn has returned.
func (r *Runner) Done() <-chan struct{} { return r.done }

// Stop cancels fn's context and waits for it to return, or for ctx to end.
func (r *Runner) Stop(ctx context.Context) error {
	if r.cancel == nil {
		return nil
	}
	r.once.Do(r.cancel)
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("still running after stop deadline: %w", ctx.Err())
	}
}
