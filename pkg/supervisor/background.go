package supervisor

import (
	"context"
	"fmt"
	"sync"
)

// Background is a component that starts its components, in order and each
// gated on the one before as the supervisor would, in the background: the
// components after it in the supervisor's list start at the same time.
// Wait returns the component that holds the list up until all of them are
// ready. A death of any of them is Background's death; Stop stops them in
// reverse order.
type Background struct {
	name       string
	components []Component

	exited   chan error
	cancel   context.CancelFunc
	done     chan struct{} // closed when the start-up goroutine returned
	startErr error         // why start-up failed; read once done is closed
	mu       sync.Mutex
	started  []Component
}

// NewBackground returns a Background named name.
func NewBackground(name string, components ...Component) *Background {
	return &Background{name: name, components: components, exited: make(chan error, len(components)+1),
		done: make(chan struct{})}
}

// Name implements Component.
func (b *Background) Name() string { return b.name }

// Init implements Component; the components' Init runs in Start.
func (b *Background) Init(context.Context) error { return nil }

// Start starts the components in a goroutine.
func (b *Background) Start(ctx context.Context) error {
	ctx, b.cancel = context.WithCancel(ctx)
	go func() {
		defer close(b.done)
		for _, c := range b.components {
			if err := b.startOne(ctx, c); err != nil {
				b.startErr = err
				b.exited <- err
				return
			}
		}
	}()
	return nil
}

func (b *Background) startOne(ctx context.Context, c Component) error {
	if err := initAndStart(ctx, c); err != nil {
		return err
	}
	b.mu.Lock()
	b.started = append(b.started, c)
	b.mu.Unlock()
	go func() {
		err, ok := <-c.Exited()
		if !ok || err == nil {
			err = fmt.Errorf("%s exited unexpectedly", c.Name())
		} else {
			err = fmt.Errorf("%s: %w", c.Name(), err)
		}
		b.exited <- err
	}()
	if err := c.Ready(ctx); err != nil {
		return fmt.Errorf("%s: not ready: %w", c.Name(), err)
	}
	return nil
}

// Ready implements Component: at once (see Wait).
func (b *Background) Ready(context.Context) error { return nil }

// Exited implements Component.
func (b *Background) Exited() <-chan error { return b.exited }

// Stop implements Component: ends a start-up still under way, then stops
// the started components in reverse order.
func (b *Background) Stop(ctx context.Context) error {
	if b.cancel == nil {
		return nil
	}
	b.cancel()
	select {
	case <-b.done:
	case <-ctx.Done():
	}
	b.mu.Lock()
	started := append([]Component(nil), b.started...)
	b.mu.Unlock()
	var first error
	for i := len(started) - 1; i >= 0; i-- {
		if err := started[i].Stop(ctx); err != nil && first == nil {
			first = fmt.Errorf("%s: %w", started[i].Name(), err)
		}
	}
	return first
}

// Wait is the component, placed later in the supervisor's list, that is
// ready once every component of b is.
func (b *Background) Wait() Component { return &backgroundWait{b: b} }

type backgroundWait struct{ b *Background }

func (w *backgroundWait) Name() string                { return w.b.name + " (wait)" }
func (w *backgroundWait) Init(context.Context) error  { return nil }
func (w *backgroundWait) Start(context.Context) error { return nil }
func (w *backgroundWait) Stop(context.Context) error  { return nil }

// selfBoundedReady: the supervisor's ready timeout does not apply to the
// wait; the background components bound or report their own start-up
// (containerd has its own deadline; the image import logs its progress and
// fails on a broken archive).
func (w *backgroundWait) selfBoundedReady() bool { return true }

// Exited never delivers: Background reports its components' deaths.
func (w *backgroundWait) Exited() <-chan error { return nil }

func (w *backgroundWait) Ready(ctx context.Context) error {
	select {
	case <-w.b.done:
		return w.b.startErr
	case <-ctx.Done():
		return ctx.Err()
	}
}
