package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace/noop"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/vild/vild/internal/services"
	"github.com/vild/vild/ort"
)

// vild serve --otlp-endpoint over the fixture bundle's real pipeline: one
// detect request with a traceparent reaches the collector as one trace (the
// server span the caller's child; decode, the pipeline's stages, scoring and
// the text encoder under it), and its access-log line has the request ID the
// answer has, and no category name.
func TestServeExportsTraces(t *testing.T) {
	lib := ort.DefaultLibraryPath()
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("ONNX Runtime library not at %s", lib)
	}
	var mu sync.Mutex
	var spans []*tracepb.Span
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				spans = append(spans, ss.Spans...)
			}
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	defer collector.Close()
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()) })

	cfg := testServeConfig(t)
	cfg.Model.ModelDir = filepath.Join("..", "..", "testdata", "tinybundle")
	cfg.Model.ORTLib = lib
	cfg.OTLPEndpoint = collector.URL
	if m, err := loadModel(context.Background(), cfg.Model); errors.Is(err, ort.ErrDisabled) {
		t.Skip("built without cgo")
	} else if err != nil {
		t.Fatal(err)
	} else {
		m.Close()
	}
	var logs services.SyncBuffer
	r := startServeLog(t, cfg, loadModel, slog.New(slog.NewJSONHandler(&logs, nil)))
	base := "http://" + r.addr
	for i := 0; get(t, base+"/readyz") != 200; i++ {
		if i > 3000 {
			t.Fatal("never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	const traceID, parentID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/detect?categories=zanzibar-teapot,cat&score_threshold=0", bytes.NewReader(scenePNG(t)))
	req.Header.Set("Content-Type", "image/png")
	req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
	req.Header.Set("X-Request-ID", "not a valid id")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Request-ID")
	if resp.StatusCode != 200 || len(id) != 32 {
		t.Fatalf("detect: %d, X-Request-ID %q", resp.StatusCode, id)
	}
	r.cancel()
	if err := <-r.done; err != nil { // serve flushes the spans before it returns
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	names := map[string]*tracepb.Span{}
	for _, s := range spans {
		if hex.EncodeToString(s.TraceId) == traceID {
			names[s.Name] = s
		}
	}
	root := names["/v1/detect"]
	if root == nil || hex.EncodeToString(root.ParentSpanId) != parentID || root.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Fatalf("no server span under the caller's: %v", names)
	}
	for _, stage := range []string{"decode", "preprocess", "backbone", "proposals", "roi_align", "box_head", "scoring", "text_encode"} {
		s := names[stage]
		if s == nil {
			t.Errorf("no %s span in the trace", stage)
			continue
		}
		for p := s; !bytes.Equal(p.SpanId, root.SpanId); {
			if p = parentOf(spans, p); p == nil {
				t.Errorf("%s does not descend from the server span", stage)
				break
			}
		}
	}

	var line map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" && m["route"] == "/v1/detect" {
			line = m
		}
	}
	if line == nil || line["request_id"] != id || line["trace_id"] != traceID || line["backbone_ms"] == nil {
		t.Errorf("access-log line %v, answer's ID %s", line, id)
	}
	if strings.Contains(logs.String(), "zanzibar") {
		t.Error("the log holds a category name")
	}
}

// parentOf is s's parent among spans, nil if none.
func parentOf(spans []*tracepb.Span, s *tracepb.Span) *tracepb.Span {
	for _, p := range spans {
		if bytes.Equal(p.SpanId, s.ParentSpanId) {
			return p
		}
	}
	return nil
}
