package handlers

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vild/vild/observe"
)

// Metrics are the server's Prometheus collectors.
type Metrics struct {
	requests   *prometheus.CounterVec
	stages     *prometheus.HistogramVec
	inflight   prometheus.Gauge
	queueDepth prometheus.Gauge
	rejections *prometheus.CounterVec
	// quarantined counts the vocabulary files the store set aside; its
	// source is set when the vocabularies resource is mounted.
	quarantined       prometheus.CounterFunc
	quarantinedSource atomic.Pointer[func() int]
}

// NewMetrics creates the collectors and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vild_http_requests_total", Help: "HTTP requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vild_stage_seconds",
			Help:    "Per-stage latency: queue, decode, preprocess, backbone, proposals, roi_align, box_head, crops, scoring, masks, encode.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"stage"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vild_inflight_inferences", Help: "Inferences running on a worker.",
		}),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vild_queue_depth", Help: "Requests waiting for a worker.",
		}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vild_rejections_total", Help: "Requests answered with an error, by problem type.",
		}, []string{"reason"}),
	}
	m.quarantined = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "vild_vocabulary_files_quarantined_total",
		Help: "Stored vocabulary files that could not be loaded and were set aside (listed as unavailable).",
	}, func() float64 {
		if f := m.quarantinedSource.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	if reg != nil {
		reg.MustRegister(m.requests, m.stages, m.inflight, m.queueDepth, m.rejections, m.quarantined)
	}
	return m
}

// countQuarantined makes the quarantine counter read n.
func (m *Metrics) countQuarantined(n func() int) { m.quarantinedSource.Store(&n) }

// stage observes a stage's latency, with the trace as exemplar, and notes it
// for the request's access-log line.
func (m *Metrics) stage(ctx context.Context, name string, d time.Duration) {
	observe.Stage(ctx, m.stages.WithLabelValues(name), name, d)
}

func (m *Metrics) rejected(reason string) { m.rejections.WithLabelValues(reason).Inc() }

// instrument counts requests by route pattern and status.
func (m *Metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &observe.Writer{ResponseWriter: w, Status: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		m.requests.WithLabelValues(route, r.Method, strconv.Itoa(sw.Status)).Inc()
	})
}
