package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/vild/vild/api"
	"github.com/vild/vild/labelstudio"
	"github.com/vild/vild/vocabulary"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/vild/vild/openapi"
)

func TestVocabularies(t *testing.T) {
	e := newEnv(t, nil)
	put := func(spec string, hdr ...string) *httptest.ResponseRecorder {
		return e.do(t, "PUT", "/v1/vocabularies/colours", "application/json", strings.NewReader(spec), hdr...)
	}
	rec := put(`{"categories":["warm","blue","Blue"],"synonyms":{"warm":["red","orange"]},"negatives":["green"],"thresholds":{"blue":0.5}}`)
	if rec.Code != 201 || rec.Header().Get("Location") != "/v1/vocabularies/colours" {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	etag := rec.Header().Get("ETag")
	v := decodeBody[vocabulary.Entry](t, rec)
	if `"`+v.ETag+`"` != etag || strings.Join(v.Categories, ",") != "warm,blue" {
		t.Fatalf("created %+v, ETag %s", v, etag)
	}
	embedded := e.emb.Calls.Load()
	if embedded != 5 { // warm, red, orange, blue and the negative green, each once
		t.Fatalf("embedded %d names at PUT, want 5", embedded)
	}

	rec = e.postJSON(t, "/v1/detect", map[string]any{"image": b64(scenePNG(t)), "vocabulary": "colours"})
	if rec.Code != 200 {
		t.Fatalf("detect: %d %s", rec.Code, rec.Body)
	}
	r := decodeBody[api.DetectResponse](t, rec)
	if labels(r.Detections) != "blue,warm" || r.VocabularyDigest != v.ETag {
		t.Fatalf("detect with vocabulary: %+v", r)
	}
	if e.emb.Calls.Load() != embedded {
		t.Fatal("detect re-embedded the stored vocabulary")
	}

	if rec = e.do(t, "GET", "/v1/vocabularies/colours", "", nil); rec.Code != 200 || rec.Header().Get("ETag") != etag {
		t.Fatalf("get: %d %v", rec.Code, rec.Header())
	}
	if rec = e.do(t, "GET", "/v1/vocabularies/colours", "", nil, "If-None-Match", etag); rec.Code != 304 {
		t.Fatalf("conditional get: %d", rec.Code)
	}
	wantProblem(t, put(`{"categories":["red"]}`, "If-Match", `"sha256:other"`), 412, "precondition-failed")
	if rec = put(`{"categories":["red"]}`, "If-Match", etag); rec.Code != 200 || rec.Header().Get("ETag") == etag {
		t.Fatalf("conditional replace: %d %v", rec.Code, rec.Header())
	}
	list := decodeBody[api.VocabularyList](t, e.do(t, "GET", "/v1/vocabularies", "", nil))
	if len(list.Vocabularies) != 1 || list.Vocabularies[0].Name != "colours" || list.Vocabularies[0].Categories != 1 {
		t.Fatalf("list %+v", list)
	}

	// Persisted: a new store over the same directory sees it.
	again, err := vocabulary.OpenFileStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.Get(context.Background(), "colours"); err != nil || got.Categories[0] != "red" {
		t.Fatalf("reopened: %+v %v", got, err)
	}

	for _, c := range []struct {
		name, method, path, body string
		status                   int
		slug                     string
	}{
		{"bad name", "PUT", "/v1/vocabularies/..bad", `{"categories":["red"]}`, 400, "invalid-vocabulary-name"},
		{"no categories", "PUT", "/v1/vocabularies/x", `{"categories":[]}`, 400, "invalid-category"},
		{"unknown field", "PUT", "/v1/vocabularies/x", `{"categories":["red"],"labels":[]}`, 400, "invalid-json"},
		{"bad template", "PUT", "/v1/vocabularies/x", `{"categories":["red"],"templates":["no placeholder"]}`, 400, "invalid-templates"},
		{"templates unsupported", "PUT", "/v1/vocabularies/x", `{"categories":["red"],"templates":["a {}."]}`, 422, "templates-unsupported"},
		{"missing", "GET", "/v1/vocabularies/nope", ``, 404, "vocabulary-not-found"},
		{"delete missing", "DELETE", "/v1/vocabularies/nope", ``, 404, "vocabulary-not-found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ct := ""
			if c.body != "" {
				ct = "application/json"
			}
			wantProblem(t, e.do(t, c.method, c.path, ct, strings.NewReader(c.body)), c.status, c.slug)
		})
	}
	wantProblem(t, e.postJSON(t, "/v1/detect", map[string]any{"image": b64(scenePNG(t)), "vocabulary": "nope"}), 404, "vocabulary-not-found")
	wantProblem(t, e.do(t, "PUT", "/v1/vocabularies/x", "text/plain", strings.NewReader(`{}`)), 415, "unsupported-content-type")

	if rec = e.do(t, "DELETE", "/v1/vocabularies/colours", "", nil); rec.Code != 204 {
		t.Fatalf("delete: %d", rec.Code)
	}
	wantProblem(t, e.do(t, "GET", "/v1/vocabularies/colours", "", nil), 404, "vocabulary-not-found")
	if ents, _ := os.ReadDir(e.dir); len(ents) != 0 {
		t.Fatalf("files left after delete: %v", ents)
	}
}

func TestVocabularyCap(t *testing.T) {
	e := newEnv(t, func(d *Deps) { d.Config.MaxCategories, d.Config.MaxVocabularyCategories = 2, 3 })
	names := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = string(rune('a' + i))
		}
		b, _ := json.Marshal(map[string]any{"categories": s})
		return string(b)
	}
	if rec := e.do(t, "PUT", "/v1/vocabularies/v", "application/json", strings.NewReader(names(3))); rec.Code != 201 {
		t.Fatalf("3 names in a vocabulary: %d %s", rec.Code, rec.Body)
	}
	wantProblem(t, e.do(t, "PUT", "/v1/vocabularies/v", "application/json", strings.NewReader(names(4))), 400, "too-many-categories")
}

func TestImageSessions(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.postJSON(t, "/v1/images", map[string]any{"image": b64(scenePNG(t))})
	if rec.Code != 201 {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	s := decodeBody[api.ImageSession](t, rec)
	if len(s.ID) != 32 || s.Regions != 2 || s.Image.Width != 200 || s.ExpiresAt.IsZero() {
		t.Fatalf("session %+v", s)
	}
	if s.TimingsMS == nil || s.TimingsMS.Backbone <= 0 {
		t.Fatalf("registration timings %+v do not show the backbone", s.TimingsMS)
	}
	backbones := stageCount(t, e, "backbone")
	if backbones != 1 {
		t.Fatalf("backbone histogram holds %d observations after registration, want 1", backbones)
	}
	for _, c := range []struct {
		cats []string
		want string
	}{{[]string{"red", "blue"}, "blue,red"}, {[]string{"crimson red"}, "crimson red,crimson red"}, {[]string{"blue", "orange"}, "blue,orange"}} {
		rec = e.postJSON(t, "/v1/images/"+s.ID+"/detect", map[string]any{"categories": c.cats})
		if rec.Code != 200 {
			t.Fatalf("re-score: %d %s", rec.Code, rec.Body)
		}
		r := decodeBody[api.DetectResponse](t, rec)
		if got := labels(r.Detections); got != c.want {
			t.Fatalf("re-score %v: %q, want %q", c.cats, got, c.want)
		}
		// The timings show scoring only, the detector's Regions did not run
		// again, and no backbone latency was recorded for it.
		tm := r.TimingsMS
		if tm == nil || tm.Decode != 0 || tm.Preprocess != 0 || tm.Backbone != 0 || tm.Proposals != 0 ||
			tm.RoIAlign != 0 || tm.BoxHead != 0 || tm.Total < tm.Scoring {
			t.Fatalf("re-score timings %+v show more than scoring", tm)
		}
		if n := e.det.RegionsCalls.Load(); n != 1 {
			t.Fatalf("the backbone ran %d times, want once", n)
		}
		if n := stageCount(t, e, "backbone"); n != backbones {
			t.Fatalf("re-scoring recorded backbone latency (%d observations, want %d)", n, backbones)
		}
	}
	if e.det.ScoreCalls.Load() != 3 {
		t.Fatalf("scored %d times", e.det.ScoreCalls.Load())
	}
	if rec = e.do(t, "GET", "/v1/images/"+s.ID, "", nil); rec.Code != 200 {
		t.Fatalf("get: %d", rec.Code)
	}
	wantProblem(t, e.postJSON(t, "/v1/images/"+s.ID+"/detect", `{"categories":["red"],"image":"AAAA"}`), 400, "invalid-json")
	if rec = e.do(t, "DELETE", "/v1/images/"+s.ID, "", nil); rec.Code != 204 {
		t.Fatalf("delete: %d", rec.Code)
	}
	wantProblem(t, e.postJSON(t, "/v1/images/"+s.ID+"/detect", map[string]any{"categories": []string{"red"}}), 404, "image-not-found")
	wantProblem(t, e.do(t, "GET", "/v1/images/nope", "", nil), 404, "image-not-found")
	wantProblem(t, e.postJSON(t, "/v1/images", `{"image":"`+b64(scenePNG(t))+`","categories":["red"]}`), 400, "invalid-json")
	wantProblem(t, e.do(t, "POST", "/v1/images", "image/png", bytes.NewReader(scenePNG(t)[:60])), 400, "corrupt-image")
}

func TestSessionCacheBounded(t *testing.T) {
	e := newEnv(t, func(d *Deps) { d.Config.MaxSessions = 2 })
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, decodeBody[api.ImageSession](t, e.postJSON(t, "/v1/images", map[string]any{"image": b64(scenePNG(t))})).ID)
	}
	wantProblem(t, e.do(t, "GET", "/v1/images/"+ids[0], "", nil), 404, "image-not-found")
	for _, id := range ids[1:] {
		if rec := e.do(t, "GET", "/v1/images/"+id, "", nil); rec.Code != 200 {
			t.Fatalf("recent session evicted: %d", rec.Code)
		}
	}
}

func TestEmbeddingsAndModels(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.postJSON(t, "/v1/embeddings/text", map[string]any{"texts": []string{"red", "blue"}})
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	r := decodeBody[api.TextEmbeddingResponse](t, rec)
	if r.Dim != 3 || len(r.Embeddings) != 2 || r.Embeddings[0].Embedding[0] != 1 || r.Embeddings[1].Embedding[2] != 1 {
		t.Fatalf("embeddings %+v", r)
	}
	wantProblem(t, e.postJSON(t, "/v1/embeddings/text", map[string]any{"texts": []string{}}), 400, "invalid-request")
	wantProblem(t, e.postJSON(t, "/v1/embeddings/text", map[string]any{"texts": []string{strings.Repeat("x", 200)}}), 400, "invalid-category")
	rec = e.do(t, "GET", "/v1/models", "", nil)
	m := decodeBody[api.ModelList](t, rec)
	if len(m.Models) != 1 || m.Models[0].ID != "colors@0123" || m.Models[0].EmbeddingDim != 3 {
		t.Fatalf("models %+v", m)
	}
	// Categories are objects with their split and synonyms; base_categories is gone.
	if got, _ := jsonString(m.Models[0].CategoryList); got != `[{"name":"red","split":"base","synonyms":["crimson"]},{"name":"blue","split":"novel"}]` {
		t.Fatalf("categories %s", got)
	}
	if strings.Contains(rec.Body.String(), "base_categories") {
		t.Fatalf("models %s still carry base_categories", rec.Body)
	}
	wantProblem(t, e.do(t, "GET", "/v1/nothing", "", nil), 404, "not-found")
	wantProblem(t, e.do(t, "GET", "/v1/detect", "", nil), 405, "method-not-allowed")
}

// The OpenAPI 3 document is served next to the Swagger UI.
func TestOpenAPI3IsServed(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.do(t, "GET", "/docs/openapi3.json", "", nil)
	var spec struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("GET /docs/openapi3.json: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &spec); err != nil || !strings.HasPrefix(spec.OpenAPI, "3.") || spec.Paths["/v1/detect"] == nil {
		t.Fatalf("openapi3.json: %v, version %q, %d paths", err, spec.OpenAPI, len(spec.Paths))
	}
}

// Every API route is described in the generated OpenAPI document and every
// documented operation is routed.
func TestOpenAPICoversRoutes(t *testing.T) {
	e := newEnv(t, func(d *Deps) { d.LabelStudio = &labelstudio.Settings{} })
	var spec struct {
		Swagger string                    `json:"swagger"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openapi.JSON, &spec); err != nil || spec.Swagger != "2.0" {
		t.Fatalf("openapi: %v %q", err, spec.Swagger)
	}
	documented := map[string]bool{}
	for p, ops := range spec.Paths {
		for m := range ops {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	routed := map[string]bool{}
	err := chi.Walk(e.h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if strings.HasPrefix(route, "/docs") || route == "/*" {
			return nil
		}
		routed[method+" "+strings.TrimSuffix(route, "/")] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for r := range routed {
		if !documented[r] {
			missing = append(missing, "undocumented "+r)
		}
	}
	for d := range documented {
		if !routed[d] {
			missing = append(missing, "unrouted "+d)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatal(strings.Join(missing, "\n"))
	}
	if rec := e.do(t, "GET", "/docs/doc.json", "", nil); rec.Code != 200 || !strings.Contains(rec.Body.String(), "/v1/detect") {
		t.Fatalf("/docs/doc.json: %d", rec.Code)
	}
	if rec := e.do(t, "GET", "/docs/index.html", "", nil); rec.Code != 200 || !strings.Contains(rec.Body.String(), "swagger") {
		t.Fatalf("/docs/index.html: %d", rec.Code)
	}
}
