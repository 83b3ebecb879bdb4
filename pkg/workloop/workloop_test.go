package workloop

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// TestRun: a key whose sync fails is reported and synced again; Run returns
// when the context ends.
func TestRun(t *testing.T) {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Millisecond, 10*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	calls := map[string]int{}
	var failures []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, q, func(_ context.Context, key string) error {
			mu.Lock()
			defer mu.Unlock()
			calls[key]++
			if key == "flaky" && calls[key] < 3 {
				return errors.New("not yet")
			}
			if calls["flaky"] >= 3 && calls["ok"] >= 1 {
				cancel()
			}
			return nil
		}, func(key string, err error) {
			mu.Lock()
			defer mu.Unlock()
			failures = append(failures, key+": "+err.Error())
		})
	}()
	q.Add("ok")
	q.Add("flaky")
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["flaky"] != 3 || calls["ok"] != 1 || len(failures) != 2 {
		t.Errorf("calls %v, failures %q: want flaky synced 3 times (2 failures reported), ok once", calls, failures)
	}
	if !q.ShuttingDown() {
		t.Error("the queue was not shut down")
	}
}
