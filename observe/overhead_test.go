package observe_test

import (
	"context"
	"image"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/vild/vild/admission"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/inference"
	"github.com/vild/vild/observe"
)

// nopDetector does no work and reports every stage.
type nopDetector struct{}

func (nopDetector) Regions(context.Context, image.Image) (*detector.Regions, error) {
	return &detector.Regions{Width: 1, Height: 1, Timings: detector.Timings{Preprocess: time.Microsecond,
		Backbone: time.Microsecond, Proposals: time.Microsecond, RoIAlign: time.Microsecond, BoxHead: time.Microsecond}}, nil
}

func (nopDetector) Score(context.Context, *detector.Regions, *detector.Vocabulary, detector.Options) (*detector.Result, error) {
	return &detector.Result{Width: 1, Height: 1, Timings: detector.Timings{Scoring: time.Microsecond}}, nil
}

// BenchmarkOverhead isolates what the telemetry adds to one request: a chi
// route that runs inference.Runner over a detector and decoder that do no
// work, observing every stage into a histogram (with exemplars) and the
// request's Record, as the detect resource does. Without the middleware
// (none), with it and nothing on (off), with the access log (log), and with
// the access log and every span recorded in memory (on). The difference from
// none, over a detect request's own time (BenchmarkDetect), is the overhead.
func BenchmarkOverhead(b *testing.B) {
	hist := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "x_seconds", Help: "x"}, []string{"stage"})
	run := &inference.Runner{Detector: nopDetector{},
		Decoder: inference.DecoderFunc(func(context.Context, []byte) (image.Image, error) {
			return image.NewGray(image.Rect(0, 0, 1, 1)), nil
		}),
		Queue: admission.New(2, 8, time.Second, admission.Gauges{}),
		Observe: func(ctx context.Context, stage string, d time.Duration) {
			observe.Stage(ctx, hist.WithLabelValues(stage), stage, d)
		},
	}
	handler := func(w http.ResponseWriter, r *http.Request) {
		observe.Vocabulary(r.Context(), "sha256:0123")
		if _, err := run.Detect(r.Context(), nil, &detector.Vocabulary{}, detector.Options{MaxDetections: 10}); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		_, _ = w.Write([]byte(`{"detections":[]}`))
	}
	mux := func(mw ...func(http.Handler) http.Handler) http.Handler {
		r := chi.NewRouter()
		r.Use(mw...)
		r.Post("/v1/detect", handler)
		return r
	}
	bench := func(b *testing.B, h http.Handler) {
		b.ReportAllocs()
		for b.Loop() {
			req := httptest.NewRequest(http.MethodPost, "/v1/detect", nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
	}
	accessLog := slog.New(slog.NewJSONHandler(io.Discard, nil))
	b.Run("none", func(b *testing.B) {
		otel.SetTracerProvider(noop.NewTracerProvider())
		bench(b, mux())
	})
	b.Run("off", func(b *testing.B) {
		otel.SetTracerProvider(noop.NewTracerProvider())
		bench(b, mux(observe.Options{}.Middleware))
	})
	b.Run("log", func(b *testing.B) {
		otel.SetTracerProvider(noop.NewTracerProvider())
		bench(b, mux(observe.Options{Log: accessLog, Sample: 1, Model: "m"}.Middleware))
	})
	b.Run("on", func(b *testing.B) {
		exp := tracetest.NewInMemoryExporter()
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
		otel.SetTracerProvider(tp)
		defer func() {
			otel.SetTracerProvider(noop.NewTracerProvider())
			_ = tp.Shutdown(b.Context())
		}()
		h := mux(observe.Options{Log: accessLog, Sample: 1, Model: "m"}.Middleware)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			req := httptest.NewRequest(http.MethodPost, "/v1/detect", nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if i++; i%1000 == 0 {
				exp.Reset()
			}
		}
	})
}
