package observe_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/vild/vild/api"
	"github.com/vild/vild/apikey"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/handlers"
	"github.com/vild/vild/handlers/handlerstest"
	"github.com/vild/vild/observe"
)

// category is a name no log line may hold.
const category = "zanzibar-teapot-7f3a"

// stagedDetector is the colour detector reporting every pipeline stage's time,
// as the real pipeline does.
type stagedDetector struct{ handlerstest.ColorDetector }

func (d *stagedDetector) Regions(ctx context.Context, img image.Image) (*detector.Regions, error) {
	r, err := d.ColorDetector.Regions(ctx, img)
	if err == nil {
		r.Timings = detector.Timings{Preprocess: time.Millisecond, Backbone: 2 * time.Millisecond,
			Proposals: time.Millisecond, RoIAlign: time.Millisecond, BoxHead: time.Millisecond}
	}
	return r, err
}

// server is the API over the colour detector with the middleware; mod
// adjusts the deps.
func server(t testing.TB, obs *observe.Options, mod func(*handlers.Deps)) http.Handler {
	t.Helper()
	cfg := handlers.DefaultConfig()
	model := api.Model{ID: "colors@0123", Name: "colors", Digest: "sha256:0123", EmbeddingDim: handlerstest.Dim,
		Templates: []string{"a photo of a {}."},
		Defaults:  detector.Options{ScoreThreshold: 0.3, NMSIoU: 0.5, MaxDetections: 100}}
	model.SetCategories([]api.ModelCategory{{Name: "red", Split: "base"}, {Name: "blue", Split: "novel"}})
	deps := handlers.Deps{
		Detector: &stagedDetector{}, Embedder: &handlerstest.ColorEmbedder{},
		Decoder: handlerstest.Decoder{MaxSide: cfg.MaxImageSide, MaxPixels: cfg.MaxImagePixels},
		Model:   model, Config: cfg,
	}
	if obs != nil {
		deps.Middleware = append(deps.Middleware, obs.Middleware)
	}
	if mod != nil {
		mod(&deps)
	}
	h, err := handlers.New(deps)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func scenePNG(t testing.TB) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 200, 120))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(20, 20, 60, 60), image.NewUniform(color.RGBA{255, 0, 0, 255}), image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(100, 40, 150, 90), image.NewUniform(color.RGBA{0, 0, 255, 255}), image.Point{}, draw.Src)
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func detectBody(t testing.TB) []byte {
	b, err := json.Marshal(map[string]any{"image": base64.StdEncoding.EncodeToString(scenePNG(t)),
		"categories": []string{"red", category}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func do(h http.Handler, method, path string, body []byte, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// tracing makes otel's global provider record spans for the test.
func tracing(t *testing.T) *tracetest.InMemoryExporter {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()); _ = tp.Shutdown(context.Background()) })
	return exp
}

// logLines are the JSON lines written to buf.
func logLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// accessLines are the "request" lines.
func accessLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	var out []map[string]any
	for _, m := range logLines(t, buf) {
		if m["msg"] == "request" {
			out = append(out, m)
		}
	}
	return out
}

// One request with a traceparent is one trace: the server span's parent is
// the caller's span, every stage span descends from it; the access-log line
// and the response carry one request ID, and the log holds neither the
// category name nor the key's token.
func TestOneTraceAndOneLogLinePerRequest(t *testing.T) {
	exp := tracing(t)
	var buf bytes.Buffer
	obs := &observe.Options{Log: slog.New(slog.NewJSONHandler(&buf, nil)), Sample: 1, Model: "colors@0123"}
	keys := apikey.NewMemory()
	token, k, err := apikey.New("ci-robot", []apikey.Scope{apikey.ScopeDetect}, apikey.KeyLimits{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Create(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	h := server(t, obs, func(d *handlers.Deps) { d.Keys = keys })

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	rec := do(h, http.MethodPost, "/v1/detect", detectBody(t),
		"traceparent", "00-"+traceID+"-"+parentID+"-01", "Authorization", "Bearer "+token)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var resp api.DetectResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}

	spans := exp.GetSpans()
	byID := map[trace.SpanID]tracetest.SpanStub{}
	var root *tracetest.SpanStub
	for i, s := range spans {
		if s.SpanContext.TraceID().String() != traceID {
			t.Errorf("span %s is in trace %s, not the caller's", s.Name, s.SpanContext.TraceID())
		}
		byID[s.SpanContext.SpanID()] = s
		if s.SpanKind == trace.SpanKindServer {
			if root != nil {
				t.Fatalf("two server spans: %s, %s", root.Name, s.Name)
			}
			root = &spans[i]
		}
	}
	if root == nil {
		t.Fatal("no server span")
	}
	if root.Name != "/v1/detect" {
		t.Errorf("server span named %q, want the route pattern", root.Name)
	}
	if got := root.Parent.SpanID().String(); got != parentID || !root.Parent.IsRemote() {
		t.Errorf("server span's parent %s (remote %v), want the caller's %s", got, root.Parent.IsRemote(), parentID)
	}
	for _, stage := range []string{"decode", "preprocess", "backbone", "proposals", "roi_align", "box_head", "scoring"} {
		found := false
		for _, s := range spans {
			if s.Name != stage {
				continue
			}
			found = true
			for p := s.Parent.SpanID(); p != root.SpanContext.SpanID(); {
				ps, ok := byID[p]
				if !ok {
					t.Errorf("stage span %s does not descend from the server span", stage)
					break
				}
				p = ps.Parent.SpanID()
			}
			if !s.EndTime.After(s.StartTime) {
				t.Errorf("stage span %s: end %v not after start %v", stage, s.EndTime, s.StartTime)
			}
		}
		if !found {
			t.Errorf("no %s span", stage)
		}
	}

	lines := accessLines(t, &buf)
	if len(lines) != 1 {
		t.Fatalf("%d access-log lines, want 1: %s", len(lines), buf.String())
	}
	l := lines[0]
	id := rec.Header().Get("X-Request-ID")
	if !observe.ValidRequestID(id) || l["request_id"] != id {
		t.Errorf("log request_id %v, response X-Request-ID %q", l["request_id"], id)
	}
	want := map[string]any{"method": "POST", "route": "/v1/detect", "status": float64(200), "model": "colors@0123",
		"vocabulary_digest": resp.VocabularyDigest, "key": "ci-robot", "trace_id": traceID}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("log %s = %v, want %v", k, l[k], v)
		}
	}
	for _, k := range []string{"bytes_in", "bytes_out", "duration_ms", "queue_ms", "decode_ms", "preprocess_ms",
		"backbone_ms", "proposals_ms", "roi_align_ms", "box_head_ms", "scoring_ms"} {
		if _, ok := l[k]; !ok {
			t.Errorf("log line lacks %s: %v", k, l)
		}
	}
	if l["bytes_out"] != float64(rec.Body.Len()) {
		t.Errorf("bytes_out %v, body %d", l["bytes_out"], rec.Body.Len())
	}
	for _, secret := range []string{category, token, token[len(token)-12:]} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
}

// A well-formed X-Request-ID is kept; a malformed one is replaced by a new ID.
func TestRequestIDs(t *testing.T) {
	h := server(t, &observe.Options{}, nil)
	for _, c := range []struct {
		in   string
		keep bool
	}{
		{"abc-123_X.y", true}, {strings.Repeat("a", 128), true},
		{"", false}, {"bad id", false}, {"<script>", false}, {strings.Repeat("a", 129), false}, {"ünï", false},
	} {
		rec := do(h, http.MethodGet, "/livez", nil, "X-Request-ID", c.in)
		got := rec.Header().Get("X-Request-ID")
		if c.keep && got != c.in {
			t.Errorf("%q: answered %q, want it kept", c.in, got)
		}
		if !c.keep && (got == c.in || len(got) != 32 || !observe.ValidRequestID(got)) {
			t.Errorf("%q: answered %q, want a new 32-hex ID", c.in, got)
		}
	}
	a := do(h, http.MethodGet, "/livez", nil).Header().Get("X-Request-ID")
	b := do(h, http.MethodGet, "/livez", nil).Header().Get("X-Request-ID")
	if a == b {
		t.Errorf("two requests got one ID %q", a)
	}
}

// Every problem body carries the request's ID (the key check answers
// before the route is matched: no instance).
func TestProblemsCarryRequestID(t *testing.T) {
	var buf bytes.Buffer
	obs := &observe.Options{Log: slog.New(slog.NewJSONHandler(&buf, nil)), Sample: 0}
	// The server's log is the access log's: its "request failed" lines name the
	// route too, never the raw path.
	h := server(t, obs, func(d *handlers.Deps) { d.Keys = apikey.NewMemory(); d.Logger = obs.Log })
	for _, c := range []struct {
		method, path string
		body         []byte
		status       int
		instance     string
	}{
		{http.MethodGet, "/nowhere/" + category, nil, 404, ""},
		{http.MethodPost, "/v1/detect", detectBody(t), 401, ""},
		{http.MethodPost, "/v1/detect", []byte("{"), 401, ""},
	} {
		rec := do(h, c.method, c.path, c.body, "X-Request-ID", "req-"+c.method)
		var p api.Problem
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || rec.Code != c.status {
			t.Fatalf("%s %s: %d %s", c.method, c.path, rec.Code, rec.Body)
		}
		if p.RequestID != "req-"+c.method || p.Instance != c.instance {
			t.Errorf("%s %s: request_id %q instance %q", c.method, c.path, p.RequestID, p.Instance)
		}
	}
	// Sample 0 drops 2xx lines only: each failure above has its line.
	if n := len(accessLines(t, &buf)); n != 3 {
		t.Errorf("%d access-log lines for 3 failures: %s", n, buf.String())
	}
	if strings.Contains(buf.String(), category) {
		t.Error("the log holds the raw path")
	}
	do(h, http.MethodGet, "/livez", nil)
	if n := len(accessLines(t, &buf)); n != 3 {
		t.Errorf("a 2xx was logged at sample 0")
	}
}

// The middleware without a provider set costs a no-op span: none recorded.
func TestNoTracingByDefault(t *testing.T) {
	h := server(t, &observe.Options{}, nil)
	rec := do(h, http.MethodPost, "/v1/detect", detectBody(t), "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
}

// A sampled request's stage latencies carry its trace ID as exemplar, which
// the metrics endpoint shows in OpenMetrics.
func TestStageExemplars(t *testing.T) {
	tracing(t)
	reg := prometheus.NewRegistry()
	h := server(t, &observe.Options{}, func(d *handlers.Deps) { d.Metrics = handlers.NewMetrics(reg) })
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	if rec := do(h, http.MethodPost, "/v1/detect", detectBody(t), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01"); rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}).ServeHTTP(rec, req)
	var found bool
	for _, l := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(l, "vild_stage_seconds_bucket") && strings.Contains(l, `trace_id="`+traceID+`"`) {
			found = true
		}
	}
	if !found {
		t.Errorf("no stage bucket with the trace's exemplar:\n%s", rec.Body)
	}
}
