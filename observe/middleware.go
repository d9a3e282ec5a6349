package observe

import (
	"encoding/binary"
	"encoding/hex"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// RequestIDHeader carries the request ID both ways.
const RequestIDHeader = "X-Request-ID"

// Options configure the middleware.
type Options struct {
	// Log receives the access log, one "request" line per request; nil: none.
	Log *slog.Logger
	// Sample is the fraction of 2xx lines logged (0..1); other statuses are
	// always logged.
	Sample float64
	// Tracer makes the spans; nil: otel's global provider (a no-op unless
	// the command set one).
	Tracer trace.TracerProvider
	// Model is the model ID the access log names.
	Model string
}

// TracerName names the server's tracer.
const TracerName = "github.com/vild/vild"

// Middleware gives each request its ID, continues the caller's trace
// (traceparent) in a server span named by the route pattern, and writes the
// access-log line. It goes inside the router (the route pattern is known
// after the request) and outside everything else.
func (o Options) Middleware(next http.Handler) http.Handler {
	tp := o.Tracer
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	tracer := tp.Tracer(TracerName)
	prop := propagation.TraceContext{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(RequestIDHeader)
		if !ValidRequestID(id) {
			id = NewRequestID()
		}
		w.Header().Set(RequestIDHeader, id)
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		rec := &Record{}
		ctx = WithRecord(ctx, rec)
		var body *countingBody
		if r.Body != nil && r.Body != http.NoBody {
			body = &countingBody{ReadCloser: r.Body}
			r.Body = body
		}
		rw := &Writer{ResponseWriter: w, Status: http.StatusOK}
		next.ServeHTTP(rw, r.WithContext(ctx))

		route := "unmatched"
		if rc := chi.RouteContext(ctx); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		if span.IsRecording() {
			span.SetName(route)
			span.SetAttributes(attribute.String("http.request.method", r.Method), attribute.String("http.route", route),
				attribute.Int("http.response.status_code", rw.Status), attribute.String("vild.request_id", id))
			if rw.Status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(rw.Status))
			}
		}
		if o.Log == nil || (rw.Status/100 == 2 && o.Sample < 1 && mrand.Float64() >= o.Sample) {
			return
		}
		var in int64
		if body != nil {
			in = body.n
		}
		attrs := make([]slog.Attr, 0, 20)
		attrs = append(attrs, slog.String("request_id", id), slog.String("method", r.Method), slog.String("route", route),
			slog.Int("status", rw.Status), slog.Int64("bytes_in", in), slog.Int64("bytes_out", rw.Bytes),
			slog.Float64("duration_ms", ms(time.Since(start))))
		rec.mu.Lock()
		for i, s := range Stages {
			if d := rec.stages[i]; d > 0 {
				attrs = append(attrs, slog.Float64(s+"_ms", ms(d)))
			}
		}
		vocab, key := rec.vocabulary, rec.key
		rec.mu.Unlock()
		if o.Model != "" {
			attrs = append(attrs, slog.String("model", o.Model))
		}
		if vocab != "" {
			attrs = append(attrs, slog.String("vocabulary_digest", vocab))
		}
		if key != "" {
			attrs = append(attrs, slog.String("key", key)) // the key's name, never its token
		}
		if sc := span.SpanContext(); sc.IsValid() {
			attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()))
		}
		o.Log.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
	})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ValidRequestID reports whether id is 1–128 of A–Z a–z 0–9 . _ -.
func ValidRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// NewRequestID is 16 random bytes in hex: from math/rand/v2's per-thread
// ChaCha8, seeded by the runtime, unpredictable enough for an ID that is no
// secret and cheaper than a system call per request.
func NewRequestID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], mrand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], mrand.Uint64())
	return hex.EncodeToString(b[:])
}

// Writer records a response's status and length.
type Writer struct {
	http.ResponseWriter
	Status      int
	Bytes       int64
	wroteHeader bool
}

// WriteHeader records the first status written.
func (w *Writer) WriteHeader(code int) {
	if !w.wroteHeader {
		w.Status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write counts b.
func (w *Writer) Write(b []byte) (int, error) {
	w.wroteHeader = true
	n, err := w.ResponseWriter.Write(b)
	w.Bytes += int64(n)
	return n, err
}

// Unwrap is the wrapped writer (for http.ResponseController).
func (w *Writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}
