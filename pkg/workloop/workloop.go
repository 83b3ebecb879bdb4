// Package workloop is the loop bramble's controllers share: take a key from
// a rate-limited work queue, sync it, and on failure retry it later with a
// growing delay.
package workloop

import (
	"context"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// Queue is a controller's queue of object keys.
type Queue = workqueue.TypedRateLimitingInterface[string]

// NewQueue returns a queue whose failed keys come back after 1 s, doubling
// up to a minute.
func NewQueue() Queue {
	return workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, time.Minute))
}

// Run syncs each queued key until ctx ends, then shuts the queue down. When
// sync fails (and ctx has not ended), failed is told (to log it) and the key
// is queued again after its back-off.
func Run(ctx context.Context, q Queue, sync func(context.Context, string) error, failed func(key string, err error)) {
	context.AfterFunc(ctx, q.ShutDown)
	for {
		key, quit := q.Get()
		if quit {
			return
		}
		err := sync(ctx, key)
		switch {
		case err == nil:
			q.Forget(key)
		case ctx.Err() == nil:
			failed(key, err)
			q.AddRateLimited(key)
		}
		q.Done(key)
	}
}
