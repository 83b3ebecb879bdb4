// Package supervisor runs a node's components in order, gates each on the
// readiness of the ones before it, and takes the whole process down when one of
// them dies, so that bramble never sits half-alive.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/pprof"
	"time"
)

// Component is one part of a node (datastore, apiserver, kubelet, ...).
//
// Init prepares files and configuration, Start launches the component and
// returns, Ready blocks until it serves, Stop shuts it down. Exited reports the
// component's end: a value arriving before Stop was called means it died.
type Component interface {
	Name() string
	Init(ctx context.Context) error
	Start(ctx context.Context) error
	Ready(ctx context.Context) error
	Stop(ctx context.Context) error
	Exited() <-chan error
}

// Supervisor owns an ordered list of components.
type Supervisor struct {
	log          *slog.Logger
	components   []Component
	readyTimeout time.Duration
	stopTimeout  time.Duration
	onReady      func()
}

// Option tunes a Supervisor.
type Option func(*Supervisor)

// WithReadyTimeout bounds how long one component may take to become ready.
func WithReadyTimeout(d time.Duration) Option { return func(s *Supervisor) { s.readyTimeout = d } }

// WithStopTimeout bounds the whole shutdown.
func WithStopTimeout(d time.Duration) Option { return func(s *Supervisor) { s.stopTimeout = d } }

// OnReady registers a function called once every component is ready.
func OnReady(f func()) Option { return func(s *Supervisor) { s.onReady = f } }

// New returns a supervisor for components, started in the given order.
func New(log *slog.Logger, components []Component, opts ...Option) *Supervisor {
	s := &Supervisor{log: log, components: components, readyTimeout: 5 * time.Minute, stopTimeout: 9 * time.Second}
	for _, o := range opts {
		o(s)
	}
	return s
}

type exit struct {
	name string
	err  error
}

// Run starts every component and blocks until ctx is cancelled (a clean stop,
// returning nil) or a component dies (returning an error naming it). Either way
// the started components are stopped in reverse order before Run returns.
func (s *Supervisor) Run(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	exits := make(chan exit, len(s.components))
	var started []Component
	runErr := func() error {
		for _, c := range s.components {
			begin := time.Now()
			if err := initAndStart(runCtx, c); err != nil {
				return err
			}
			started = append(started, c)
			go watch(c, exits)
			if err := s.waitReady(runCtx, c, exits); err != nil {
				return err
			}
			s.log.Debug("component ready", "component", c.Name(), "took", time.Since(begin).Round(time.Millisecond))
		}
		if s.onReady != nil {
			s.onReady()
		}
		select {
		case <-ctx.Done():
			return nil
		case e := <-exits:
			return died(e)
		}
	}()
	if runErr != nil && ctx.Err() != nil && errors.Is(runErr, context.Canceled) {
		runErr = nil // stopped while starting: a clean stop, not a failure
	}
	if runErr != nil {
		s.log.Error("stopping everything", "reason", runErr)
	}
	cancel()
	s.stop(started)
	return runErr
}

// initAndStart runs Init and Start with the goroutine label component=<name>,
// which every goroutine the component starts inherits: CPU profiles
// (--debug-pprof) then split by component.
func initAndStart(ctx context.Context, c Component) (err error) {
	pprof.Do(ctx, pprof.Labels("component", c.Name()), func(ctx context.Context) {
		if err = c.Init(ctx); err != nil {
			err = fmt.Errorf("%s: init: %w", c.Name(), err)
			return
		}
		if err = c.Start(ctx); err != nil {
			err = fmt.Errorf("%s: start: %w", c.Name(), err)
		}
	})
	return err
}

func watch(c Component, exits chan<- exit) {
	err, ok := <-c.Exited()
	if !ok {
		err = nil
	}
	exits <- exit{name: c.Name(), err: err}
}

func died(e exit) error {
	if e.err == nil {
		return fmt.Errorf("component %s exited unexpectedly", e.name)
	}
	return fmt.Errorf("component %s died: %w", e.name, e.err)
}

// selfBounded is a component that may tell the supervisor its readiness
// is not bounded by the ready timeout: it waits for work that bounds itself
// or reports its progress (the air-gap image import takes as long as the
// machine needs: 8 minutes on an emulated arm64 board).
type selfBounded interface{ selfBoundedReady() bool }

func (s *Supervisor) waitReady(ctx context.Context, c Component, exits <-chan exit) error {
	rctx, cancel := context.WithCancel(ctx)
	if b, ok := c.(selfBounded); !ok || !b.selfBoundedReady() {
		rctx, cancel = context.WithTimeout(ctx, s.readyTimeout)
	}
	defer cancel()
	ready := make(chan error, 1)
	go func() { ready <- c.Ready(rctx) }()
	select {
	case err := <-ready:
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%s: not ready: %w", c.Name(), err)
		}
		return nil
	case e := <-exits:
		return died(e)
	}
}

// stop stops components in reverse start order within the stop timeout.
func (s *Supervisor) stop(started []Component) {
	deadline, cancel := context.WithTimeout(context.Background(), s.stopTimeout)
	defer cancel()
	for i := len(started) - 1; i >= 0; i-- {
		c := started[i]
		begin := time.Now()
		if err := c.Stop(deadline); err != nil {
			s.log.Warn("component did not stop cleanly", "component", c.Name(), "err", err)
		}
		s.log.Debug("component stopped", "component", c.Name(), "took", time.Since(begin).Round(time.Millisecond))
	}
}
