// Package admission bounds the work a server takes on: a request first takes
// a slot in a bounded queue, failing fast when none is left, then waits a
// bounded time for one of a fixed number of workers. Rejecting early keeps
// latency bounded under overload (docs/decisions/0014-admission-queue.md).
package admission

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Errors of Do: both mean "busy, retry later".
var (
	ErrQueueFull    = errors.New("the request queue is full")
	ErrQueueTimeout = errors.New("no worker became free in time")
)

// Gauges observe the queue; nil fields are not recorded.
type Gauges struct {
	Waiting prometheus.Gauge    // requests waiting for a worker
	Running prometheus.Gauge    // requests running on a worker
	Waited  func(time.Duration) // the wait of each admitted request
}

// Queue admits work to a fixed number of workers.
type Queue struct {
	slots   chan struct{} // workers + queue length
	workers chan struct{}
	maxWait time.Duration
	g       Gauges
}

// New returns a Queue with the given workers, waiting places and longest wait.
func New(workers, queue int, maxWait time.Duration, g Gauges) *Queue {
	return &Queue{
		slots:   make(chan struct{}, workers+queue),
		workers: make(chan struct{}, workers),
		maxWait: maxWait,
		g:       g,
	}
}

func add(g prometheus.Gauge, v float64) {
	if g != nil {
		g.Add(v)
	}
}

// Do runs fn on a worker; queued reports the time spent waiting for it. It
// fails with ErrQueueFull at once when every place is taken, with
// ErrQueueTimeout after the longest wait, or with ctx's error.
func (q *Queue) Do(ctx context.Context, fn func(ctx context.Context) error) (queued time.Duration, err error) {
	select {
	case q.slots <- struct{}{}:
	default:
		return 0, ErrQueueFull
	}
	defer func() { <-q.slots }()
	start := time.Now()
	add(q.g.Waiting, 1)
	t := time.NewTimer(q.maxWait)
	defer t.Stop()
	select {
	case q.workers <- struct{}{}:
	case <-t.C:
		add(q.g.Waiting, -1)
		return time.Since(start), ErrQueueTimeout
	case <-ctx.Done():
		add(q.g.Waiting, -1)
		return time.Since(start), ctx.Err()
	}
	queued = time.Since(start)
	add(q.g.Waiting, -1)
	if q.g.Waited != nil {
		q.g.Waited(queued)
	}
	defer func() { <-q.workers }()
	if err := ctx.Err(); err != nil {
		return queued, err
	}
	add(q.g.Running, 1)
	defer add(q.g.Running, -1)
	return queued, fn(ctx)
}
