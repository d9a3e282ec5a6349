package handlers

import (
	"context"
	"time"
)

// admission is two-stage: a request first takes a slot in a bounded queue
// (failing fast with errQueueFull when none is left), then waits at most
// maxWait for one of the workers.
type admission struct {
	slots   chan struct{} // workers + queue length
	workers chan struct{}
	maxWait time.Duration
	metrics *Metrics
}

func newAdmission(workers, queue int, maxWait time.Duration, m *Metrics) *admission {
	return &admission{
		slots:   make(chan struct{}, workers+queue),
		workers: make(chan struct{}, workers),
		maxWait: maxWait,
		metrics: m,
	}
}

// do runs fn on a worker; queued reports the time spent waiting.
func (a *admission) do(ctx context.Context, fn func(ctx context.Context) error) (queued time.Duration, err error) {
	select {
	case a.slots <- struct{}{}:
	default:
		return 0, errQueueFull
	}
	defer func() { <-a.slots }()
	start := time.Now()
	a.metrics.queueDepth.Inc()
	t := time.NewTimer(a.maxWait)
	defer t.Stop()
	select {
	case a.workers <- struct{}{}:
	case <-t.C:
		a.metrics.queueDepth.Dec()
		return time.Since(start), errQueueTimeout
	case <-ctx.Done():
		a.metrics.queueDepth.Dec()
		return time.Since(start), ctx.Err()
	}
	queued = time.Since(start)
	a.metrics.queueDepth.Dec()
	a.metrics.stage("queue", queued)
	defer func() { <-a.workers }()
	if err := ctx.Err(); err != nil {
		return queued, err
	}
	a.metrics.inflight.Inc()
	defer a.metrics.inflight.Dec()
	return queued, fn(ctx)
}
