package handlers

import (
	"bytes"
	"fmt"
	"github.com/vild/vild/api"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// A JSON batch holds at most MaxBatch images (8 by default).
func TestBatchCap(t *testing.T) {
	img := b64(scenePNG(t))
	batch := func(n int) map[string]any {
		images := make([]string, n)
		for i := range images {
			images[i] = img
		}
		return map[string]any{"images": images, "categories": []string{"red", "blue"}}
	}
	e := newEnv(t, nil)
	rec := e.postJSON(t, "/v1/detect", batch(8))
	if rec.Code != 200 {
		t.Fatalf("8 images: %d %s", rec.Code, rec.Body)
	}
	if r := decodeBody[api.DetectResponse](t, rec); len(r.Results) != 8 {
		t.Fatalf("8 images: %d results", len(r.Results))
	}
	calls := e.det.RegionsCalls.Load()
	wantProblem(t, e.postJSON(t, "/v1/detect", batch(9)), 400, "invalid-request")
	wantProblem(t, e.postJSON(t, "/v1/detect", batch(0)), 400, "invalid-request")
	if e.det.RegionsCalls.Load() != calls {
		t.Fatal("a refused batch reached the detector")
	}

	small := newEnv(t, func(d *Deps) { d.Config.MaxBatch = 2 })
	if rec := small.postJSON(t, "/v1/detect", batch(2)); rec.Code != 200 {
		t.Fatalf("2 images under --max-batch 2: %d %s", rec.Code, rec.Body)
	}
	wantProblem(t, small.postJSON(t, "/v1/detect", batch(3)), 400, "invalid-request")
}

// JSON bodies without images (text embeddings, re-scoring) are capped at
// MaxJSONBytes, 4 MiB by default (vocabularies, which may carry exemplar
// images, at MaxJSONImageBytes: TestVocabularyBodyCap): cap−1 and cap are
// served, cap+1 is refused with 413, by Content-Length unread or while reading.
func TestSmallJSONCap(t *testing.T) {
	const limit = 256
	e := newEnv(t, func(d *Deps) { d.Config.MaxJSONBytes = limit })
	session := decodeBody[api.ImageSession](t, e.postJSON(t, "/v1/images", map[string]any{"image": b64(scenePNG(t))}))
	padded := func(v string, n int64) []byte { return append([]byte(v), bytes.Repeat([]byte(" "), int(n)-len(v))...) }
	for _, r := range []struct {
		name, method, path, body string
		ok                       int
	}{
		{"text embeddings", "POST", "/v1/embeddings/text", `{"texts":["red"]}`, 200},
		{"re-scoring", "POST", "/v1/images/" + session.ID + "/detect", `{"categories":["red"]}`, 200},
	} {
		for _, c := range []struct {
			name    string
			size    int64
			chunked bool
			want    int
		}{{"cap-1", limit - 1, false, 200}, {"cap", limit, false, 200}, {"cap+1", limit + 1, false, 413}, {"cap+1 chunked", limit + 1, true, 413}} {
			t.Run(r.name+" "+c.name, func(t *testing.T) {
				req := httptest.NewRequest(r.method, r.path, bytes.NewReader(padded(r.body, c.size)))
				req.Header.Set("Content-Type", "application/json")
				if c.chunked {
					req.ContentLength = -1
				}
				rec := newRecorder(e, req)
				switch {
				case c.want == 413:
					wantProblem(t, rec, 413, "body-too-large")
				case rec.Code != 200 && rec.Code != 201:
					t.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			})
		}
		t.Run(r.name+" refused by Content-Length before reading", func(t *testing.T) {
			body := &unreadBody{}
			req := httptest.NewRequest(r.method, r.path, body)
			req.Header.Set("Content-Type", "application/json")
			req.ContentLength = limit + 1
			wantProblem(t, newRecorder(e, req), 413, "body-too-large")
			if body.reads != 0 {
				t.Fatalf("%d reads", body.reads)
			}
		})
	}

	// The default cap: 4 MiB.
	d := newEnv(t, nil)
	texts := `{"texts":["red"]}`
	if rec := d.do(t, "POST", "/v1/embeddings/text", "application/json", bytes.NewReader(padded(texts, 4<<20))); rec.Code != 200 {
		t.Fatalf("4 MiB embeddings body: %d %s", rec.Code, rec.Body)
	}
	wantProblem(t, d.do(t, "POST", "/v1/embeddings/text", "application/json", bytes.NewReader(padded(texts, 4<<20+1))), 413, "body-too-large")
}

// api.Problem bodies never echo the request: not an unknown field's name, not the
// path, not a category.
func TestProblemsDoNotEchoInput(t *testing.T) {
	e := newEnv(t, nil)
	const marker = "zq7marker"
	img := b64(scenePNG(t))
	for _, c := range []struct {
		name   string
		rec    *httptest.ResponseRecorder
		status int
		slug   string
		inst   string
	}{
		{"unknown field", e.postJSON(t, "/v1/detect", `{"image":"`+img+`","<b>`+marker+`":1}`), 400, "invalid-json", "/v1/detect"},
		{"unknown session", e.do(t, "GET", "/v1/images/"+marker, "", nil), 404, "image-not-found", "/v1/images/{id}"},
		{"unknown vocabulary", e.do(t, "GET", "/v1/vocabularies/"+marker, "", nil), 404, "vocabulary-not-found", "/v1/vocabularies/{name}"},
		{"unknown route", e.do(t, "GET", "/v1/"+marker, "", nil), 404, "not-found", ""},
		{"bad category", e.postJSON(t, "/v1/detect", fmt.Sprintf(`{"image":%q,"categories":["%s\u0001"]}`, img, marker)), 400, "invalid-category", "/v1/detect"},
		{"bad option", e.do(t, "POST", "/v1/detect?head="+marker, "image/png", bytes.NewReader(scenePNG(t))), 400, "invalid-option", "/v1/detect"},
		{"unknown parameter", e.do(t, "POST", "/v1/detect?"+marker+"=1", "image/png", bytes.NewReader(scenePNG(t))), 400, "invalid-request", "/v1/detect"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := wantProblem(t, c.rec, c.status, c.slug)
			if strings.Contains(c.rec.Body.String(), marker) {
				t.Fatalf("problem echoes input: %s", c.rec.Body)
			}
			if p.Instance != c.inst {
				t.Fatalf("instance %q, want %q", p.Instance, c.inst)
			}
		})
	}
}

// stageCount is how many observations the stage's latency histogram holds,
// read from the Prometheus text exposition.
func stageCount(t *testing.T, e *testEnv, stage string) uint64 {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	prefix := `vild_stage_seconds_count{stage="` + stage + `"} `
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if n, ok := strings.CutPrefix(line, prefix); ok {
			v, err := strconv.ParseUint(n, 10, 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			return v
		}
	}
	return 0
}
