package supervisor

import (
	"context"
	"fmt"
	"time"
)

// InProcess is a component run inside this process, such as a Kubernetes
// component driven through its library entry point. Setup prepares it and
// returns the blocking function that runs it until its context ends; Check,
// if set, says when it serves.
type InProcess struct {
	ComponentName string
	Setup         func(ctx context.Context) (run func(context.Context) error, err error)
	Check         func(ctx context.Context) error
	// StopWait bounds how long Stop waits for the run function to return
	// (some components never return on cancel); 0 means until Stop's deadline.
	StopWait time.Duration
	// SelfBounded: the supervisor's ready timeout does not bound Ready;
	// Setup ends on its own and reports its progress (an image import,
	// which takes as long as the machine needs).
	SelfBounded bool

	runner Runner
	setUp  chan struct{}
}

// Name implements Component.
func (c *InProcess) Name() string { return c.ComponentName }

// Init implements Component.
func (c *InProcess) Init(context.Context) error { return nil }

func (c *InProcess) selfBoundedReady() bool { return c.SelfBounded }

// Exited implements Component.
func (c *InProcess) Exited() <-chan error { return c.runner.Exited() }

// Stop implements Component.
func (c *InProcess) Stop(ctx context.Context) error {
	if c.StopWait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.StopWait)
		defer cancel()
	}
	return c.runner.Stop(ctx)
}

// Start runs Setup and then the component in a goroutine. Setup errors arrive
// through Exited, like any other death.
func (c *InProcess) Start(ctx context.Context) error {
	c.setUp = make(chan struct{})
	c.runner.Go(context.WithoutCancel(ctx), func(ctx context.Context) error {
		run, err := c.Setup(ctx)
		if err != nil {
			return fmt.Errorf("set up: %w", err)
		}
		close(c.setUp)
		return run(ctx)
	})
	return nil
}

// Ready waits for Setup, then for Check.
func (c *InProcess) Ready(ctx context.Context) error {
	select {
	case <-c.setUp:
	case <-ctx.Done():
		return ctx.Err()
	}
	if c.Check == nil {
		return nil
	}
	return c.Check(ctx)
}
