// Package observe is the server's per-request telemetry: the request ID, the
// W3C trace context and the server span, and the one structured access-log
// line of each request. The resources tell it the facts only they know (queue
// wait, stage timings, the vocabulary's digest) through a Record in the
// request's context, which holds no HTTP type and never a category name, an
// image byte or a key.
package observe

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// Stages are the stage names a Record keeps, in pipeline order.
var Stages = []string{"queue", "decode", "preprocess", "backbone", "proposals", "roi_align", "box_head", "crops", "scoring", "masks", "encode"}

// Record is what a request's handlers learn about it, for the access log.
// Its methods are safe on a nil Record and from several goroutines.
type Record struct {
	mu         sync.Mutex
	stages     [11]time.Duration // indexed as Stages; summed over a batch's images
	vocabulary string
	key        string
}

type recordKey struct{}

// WithRecord returns ctx carrying rec.
func WithRecord(ctx context.Context, rec *Record) context.Context {
	return context.WithValue(ctx, recordKey{}, rec)
}

// RecordFrom is ctx's Record, nil for none.
func RecordFrom(ctx context.Context) *Record {
	rec, _ := ctx.Value(recordKey{}).(*Record)
	return rec
}

// Stage adds d to the stage's time.
func (r *Record) Stage(name string, d time.Duration) {
	if r == nil {
		return
	}
	for i, s := range Stages {
		if s == name {
			r.mu.Lock()
			r.stages[i] += d
			r.mu.Unlock()
			return
		}
	}
}

// Vocabulary notes the digest of the vocabulary the request used.
func (r *Record) Vocabulary(digest string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.vocabulary = digest
	r.mu.Unlock()
}

// Key notes the name (never the token) of the request's API key.
func (r *Record) Key(name string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.key = name
	r.mu.Unlock()
}

// Vocabulary notes on ctx's Record the digest of the vocabulary used.
func Vocabulary(ctx context.Context, digest string) { RecordFrom(ctx).Vocabulary(digest) }

// Stage observes one stage's latency: into h (with the trace as exemplar when
// the request's span is sampled) and into ctx's Record.
func Stage(ctx context.Context, h prometheus.Observer, name string, d time.Duration) {
	RecordFrom(ctx).Stage(name, d)
	ObserveExemplar(ctx, h, d.Seconds())
}

// ObserveExemplar observes v on h, with ctx's trace ID as exemplar when its
// span context is sampled (a histogram then links to the trace).
func ObserveExemplar(ctx context.Context, h prometheus.Observer, v float64) {
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		if eo, ok := h.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(v, prometheus.Labels{"trace_id": sc.TraceID().String()})
			return
		}
	}
	h.Observe(v)
}
