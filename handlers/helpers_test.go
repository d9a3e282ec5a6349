package handlers

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vild/vild/api"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/handlers/handlerstest"
	"github.com/vild/vild/vocabulary"
)

type testEnv struct {
	h     http.Handler
	det   *handlerstest.ColorDetector
	emb   *handlerstest.ColorEmbedder
	reg   *prometheus.Registry
	deps  Deps
	store *vocabulary.FileStore
	dir   string // the store's directory
}

// newEnv builds the API over the colour detector; mod adjusts the deps first.
func newEnv(t *testing.T, mod func(*Deps)) *testEnv {
	t.Helper()
	e := &testEnv{det: &handlerstest.ColorDetector{}, emb: &handlerstest.ColorEmbedder{}, reg: prometheus.NewRegistry()}
	e.dir = t.TempDir()
	store, err := vocabulary.OpenFileStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	e.store = store
	cfg := DefaultConfig()
	model := api.Model{ID: "colors@0123", Name: "colors", Digest: "sha256:0123", EmbeddingDim: handlerstest.Dim,
		Templates: []string{"a photo of a {}."},
		Defaults:  detector.Options{ScoreThreshold: 0.3, NMSIoU: 0.5, MaxDetections: 100}}
	model.SetCategories([]api.ModelCategory{{Name: "red", Split: "base", Synonyms: []string{"crimson"}}, {Name: "blue", Split: "novel"}})
	deps := Deps{
		Detector: e.det, Embedder: e.emb,
		Decoder:      handlerstest.Decoder{MaxSide: cfg.MaxImageSide, MaxPixels: cfg.MaxImagePixels},
		Model:        model,
		Vocabularies: store,
		Metrics:      NewMetrics(e.reg),
		Config:       cfg,
	}
	if mod != nil {
		mod(&deps)
	}
	e.deps = deps
	h, err := New(deps)
	if err != nil {
		t.Fatal(err)
	}
	e.h = h
	return e
}

// scene draws a white picture with a red square at (20,20)-(60,60) and a blue
// one at (100,40)-(150,90).
func scene(t testing.TB) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, 200, 120))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(20, 20, 60, 60), image.NewUniform(color.RGBA{255, 0, 0, 255}), image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(100, 40, 150, 90), image.NewUniform(color.RGBA{0, 0, 255, 255}), image.Point{}, draw.Src)
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func scenePNG(t testing.TB) []byte { return encodePNG(t, scene(t)) }

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func (e *testEnv) do(t testing.TB, method, path, contentType string, body io.Reader, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, body)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

func (e *testEnv) postJSON(t testing.TB, path string, v any, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	var body []byte
	switch x := v.(type) {
	case string:
		body = []byte(x)
	default:
		var err error
		if body, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	return e.do(t, http.MethodPost, path, "application/json", bytes.NewReader(body), hdr...)
}

func decodeBody[T any](t testing.TB, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %q: %v", rec.Body.String(), err)
	}
	return v
}

// wantProblem checks a problem+json answer with the given status and type slug.
func wantProblem(t testing.TB, rec *httptest.ResponseRecorder, status int, slug string) api.Problem {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body %s", rec.Code, status, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	p := decodeBody[api.Problem](t, rec)
	if p.Status != status || (slug != "" && p.Type != "urn:vild:problem:"+slug) || p.Title == "" || p.Detail == "" {
		t.Fatalf("problem %+v, want status %d type %s", p, status, slug)
	}
	return p
}

func labels(ds []detector.Detection) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.Label)
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

func jsonString(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func newRecorder(e *testEnv, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}
