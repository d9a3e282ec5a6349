package observe_test

import (
	"io"
	"log/slog"
	"net/http"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/vild/vild/observe"
)

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDetect is one JSON detect request through the whole handler over
// the colour detector (fast, so the middleware's cost shows): without the
// middleware (none); with it, no tracer provider and no access log (off); with
// the access log only, every line written (log); with the access log and
// every span recorded to an in-memory exporter (on). docs/performance.md has
// the ratios.
func BenchmarkDetect(b *testing.B) {
	body := detectBody(b)
	accessLog := slog.New(slog.NewJSONHandler(io.Discard, nil))
	run := func(b *testing.B, h http.Handler, reset func()) {
		b.ReportAllocs()
		i, cpu0 := 0, cpuTime()
		for b.Loop() {
			if rec := do(h, http.MethodPost, "/v1/detect", body); rec.Code != http.StatusOK {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if i++; reset != nil && i%1000 == 0 {
				reset()
			}
		}
		// CPU time (the process's, GC and the span batcher included) is less
		// disturbed than wall time by other work on a shared machine.
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	}
	b.Run("none", func(b *testing.B) {
		otel.SetTracerProvider(noop.NewTracerProvider())
		run(b, server(b, nil, nil), nil)
	})
	b.Run("off", func(b *testing.B) {
		otel.SetTracerProvider(noop.NewTracerProvider())
		run(b, server(b, &observe.Options{}, nil), nil)
	})
	b.Run("log", func(b *testing.B) {
		otel.SetTracerProvider(noop.NewTracerProvider())
		run(b, server(b, &observe.Options{Log: accessLog, Sample: 1, Model: "colors@0123"}, nil), nil)
	})
	b.Run("on", func(b *testing.B) {
		exp := tracetest.NewInMemoryExporter()
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
		otel.SetTracerProvider(tp)
		defer func() {
			otel.SetTracerProvider(noop.NewTracerProvider())
			_ = tp.Shutdown(b.Context())
		}()
		run(b, server(b, &observe.Options{Log: accessLog, Sample: 1, Model: "colors@0123"}, nil), exp.Reset)
	})
}
