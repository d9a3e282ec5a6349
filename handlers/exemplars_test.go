package handlers

import (
	"bytes"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vild/vild/api"
	"github.com/vild/vild/handlers/handlerstest"
	"github.com/vild/vild/vocabulary"
)

// exemplarEnv is the colour API whose embedder also embeds exemplars (the
// mean colour of a box).
func exemplarEnv(t *testing.T) *testEnv {
	return newEnv(t, func(d *Deps) { d.Embedder = &handlerstest.ColorExemplars{} })
}

func crop(t *testing.T, box [4]float32) api.Exemplar {
	return api.Exemplar{Image: scenePNG(t), Box: box}
}

var (
	redBox  = [4]float32{20, 20, 60, 60}
	blueBox = [4]float32{100, 40, 150, 90}
)

func TestDetectWithExemplars(t *testing.T) {
	e := exemplarEnv(t)
	img := scenePNG(t)
	// A named category and one defined by an exemplar of the red square.
	rec := e.postJSON(t, "/v1/detect", api.DetectRequest{Image: img, DetectOptions: api.DetectOptions{
		Categories: []string{"blue"},
		Exemplars:  []api.ExemplarCategory{{Label: "tomato", Exemplars: []api.Exemplar{crop(t, redBox)}}}}})
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	resp := decodeBody[api.DetectResponse](t, rec)
	if got := labels(resp.Detections); got != "blue,tomato" {
		t.Fatalf("labels %q, want blue,tomato", got)
	}
	// Exemplars alone (categories left out): the exemplar categories are the vocabulary.
	rec = e.postJSON(t, "/v1/detect", api.DetectRequest{Image: img, DetectOptions: api.DetectOptions{
		Exemplars: []api.ExemplarCategory{
			{Label: "tomato", Exemplars: []api.Exemplar{crop(t, redBox)}},
			{Label: "sky", Exemplars: []api.Exemplar{crop(t, blueBox)}}}}})
	only := decodeBody[api.DetectResponse](t, rec)
	if rec.Code != http.StatusOK || labels(only.Detections) != "sky,tomato" {
		t.Fatalf("exemplars alone: %d %s", rec.Code, rec.Body.String())
	}
	if only.VocabularyDigest == resp.VocabularyDigest {
		t.Error("two vocabularies, one digest")
	}
}

func TestExemplarProblems(t *testing.T) {
	img := scenePNG(t)
	ex := func(box [4]float32, n int) []api.ExemplarCategory {
		c := api.ExemplarCategory{Label: "tomato"}
		for range n {
			c.Exemplars = append(c.Exemplars, crop(t, box))
		}
		return []api.ExemplarCategory{c}
	}
	// A model without an image encoder: 422, for images and embeddings alike.
	plain := newEnv(t, nil)
	for _, c := range []api.ExemplarCategory{ex(redBox, 1)[0], {Label: "tomato", Embeddings: [][]float32{{1, 0, 0}}}} {
		rec := plain.postJSON(t, "/v1/detect", api.DetectRequest{Image: img, DetectOptions: api.DetectOptions{Exemplars: []api.ExemplarCategory{c}}})
		p := wantProblem(t, rec, http.StatusUnprocessableEntity, "exemplars-unsupported")
		if !strings.Contains(p.Detail, "image encoder") {
			t.Errorf("detail %q", p.Detail)
		}
	}
	e := exemplarEnv(t)
	for _, c := range []struct {
		name   string
		opts   api.DetectOptions
		status int
		slug   string
		detail string
	}{
		{"box outside the image", api.DetectOptions{Exemplars: ex([4]float32{150, 50, 250, 100}, 1)}, 400, "invalid-exemplars", "inside the image"},
		{"box too small", api.DetectOptions{Exemplars: ex([4]float32{10, 10, 11, 30}, 1)}, 400, "invalid-exemplars", "at least 2"},
		{"too many for a category", api.DetectOptions{Exemplars: ex(redBox, vocabulary.MaxExemplarsPerCategory+1)}, 400, "invalid-exemplars", "1 to 8"},
		{"no exemplars", api.DetectOptions{Exemplars: []api.ExemplarCategory{{Label: "tomato"}}}, 400, "invalid-exemplars", "1 to 8"},
		{"corrupt image", api.DetectOptions{Exemplars: []api.ExemplarCategory{{Label: "x", Exemplars: []api.Exemplar{{Image: []byte("not an image"), Box: redBox}}}}}, 0, "", ""},
		{"wrong dimension", api.DetectOptions{Exemplars: []api.ExemplarCategory{{Label: "x", Embeddings: [][]float32{{1, 0}}}}}, 400, "invalid-exemplars", "this model's 3"},
		{"label twice", api.DetectOptions{Exemplars: append(ex(redBox, 1), ex(blueBox, 1)...)}, 400, "invalid-exemplars", "appears once"},
		{"with a stored vocabulary", api.DetectOptions{Vocabulary: "kitchen", Exemplars: ex(redBox, 1)}, 400, "invalid-request", "not both"},
	} {
		rec := e.postJSON(t, "/v1/detect", api.DetectRequest{Image: img, DetectOptions: c.opts})
		if c.status == 0 { // decoding errors are the image translator's
			if rec.Code != http.StatusUnsupportedMediaType && rec.Code != http.StatusBadRequest {
				t.Errorf("%s: status %d %s", c.name, rec.Code, rec.Body.String())
			}
			continue
		}
		p := wantProblem(t, rec, c.status, c.slug)
		if !strings.Contains(p.Detail, c.detail) {
			t.Errorf("%s: detail %q, want it to mention %q", c.name, p.Detail, c.detail)
		}
	}
}

func TestStoredVocabularyKeepsExemplarEmbeddings(t *testing.T) {
	e := exemplarEnv(t)
	body := api.VocabularyRequest{Categories: []string{"blue"},
		Exemplars: []api.ExemplarCategory{{Label: "tomato", Exemplars: []api.Exemplar{crop(t, redBox), crop(t, [4]float32{25, 25, 55, 55})}}}}
	put := func(v any, hdr ...string) *httptest.ResponseRecorder {
		b, _ := jsonString(v)
		return e.do(t, http.MethodPut, "/v1/vocabularies/fruit", "application/json", strings.NewReader(b), hdr...)
	}
	rec := put(body)
	if rec.Code != http.StatusCreated {
		t.Fatalf("PUT: %d %s", rec.Code, rec.Body.String())
	}
	etag := rec.Header().Get("ETag")
	got := e.do(t, http.MethodGet, "/v1/vocabularies/fruit", "", nil)
	entry := decodeBody[vocabulary.Entry](t, got)
	if bytes.Contains(got.Body.Bytes(), []byte(b64(scenePNG(t))[:40])) {
		t.Fatal("the stored vocabulary holds the image")
	}
	if len(entry.Exemplars) != 1 || entry.Exemplars[0].Label != "tomato" || len(entry.Exemplars[0].Embeddings) != 2 {
		t.Fatalf("stored exemplars %+v", entry.Exemplars)
	}
	for _, v := range entry.Exemplars[0].Embeddings {
		if math.Abs(float64(v[0])-1) > 1e-6 || v[1] != 0 || v[2] != 0 {
			t.Errorf("embedding %v, want red (1, 0, 0)", v)
		}
	}
	// Detection by the stored vocabulary's name finds the exemplar category.
	rec2 := e.postJSON(t, "/v1/detect", api.DetectRequest{Image: scenePNG(t), DetectOptions: api.DetectOptions{Vocabulary: "fruit"}})
	if resp := decodeBody[api.DetectResponse](t, rec2); labels(resp.Detections) != "blue,tomato" || `"`+resp.VocabularyDigest+`"` != etag {
		t.Fatalf("detect with the stored vocabulary: %s (ETag %s)", rec2.Body.String(), etag)
	}
	// The embeddings written back as such are the same vocabulary: same ETag.
	again := api.VocabularyRequest{Categories: entry.Categories,
		Exemplars: []api.ExemplarCategory{{Label: "tomato", Embeddings: entry.Exemplars[0].Embeddings}}}
	if rec := put(again, "If-Match", etag); rec.Code != http.StatusOK || rec.Header().Get("ETag") != etag {
		t.Fatalf("PUT of the stored embeddings: %d, ETag %s, want %s", rec.Code, rec.Header().Get("ETag"), etag)
	}
	// Another exemplar is another vocabulary: another ETag.
	body.Exemplars[0].Exemplars = body.Exemplars[0].Exemplars[:1]
	body.Exemplars[0].Exemplars[0].Box = [4]float32{10, 10, 60, 60} // some white in it
	if rec := put(body); rec.Code != http.StatusOK || rec.Header().Get("ETag") == etag {
		t.Fatalf("PUT of other exemplars: %d, ETag %s", rec.Code, rec.Header().Get("ETag"))
	}
}

// PUT /v1/vocabularies may carry exemplar images: its body is capped at
// MaxJSONImageBytes, not MaxJSONBytes.
func TestVocabularyBodyCap(t *testing.T) {
	const small, limit = 256, 4096
	e := newEnv(t, func(d *Deps) { d.Config.MaxJSONBytes = small; d.Config.MaxJSONImageBytes = limit })
	spec := `{"categories":["red","blue"]}`
	padded := func(n int) []byte { return append([]byte(spec), bytes.Repeat([]byte(" "), n-len(spec))...) }
	put := func(n int) *httptest.ResponseRecorder {
		return e.do(t, http.MethodPut, "/v1/vocabularies/colours", "application/json", bytes.NewReader(padded(n)))
	}
	if rec := put(limit); rec.Code != http.StatusCreated {
		t.Fatalf("a %d-byte vocabulary under a %d-byte image cap: %d %s", limit, limit, rec.Code, rec.Body)
	}
	wantProblem(t, put(limit+1), http.StatusRequestEntityTooLarge, "body-too-large")
}

// A registered image is re-scored against exemplar categories too, here given
// as embeddings (what a stored vocabulary returns).
func TestRescoreWithExemplars(t *testing.T) {
	e := exemplarEnv(t)
	session := decodeBody[api.ImageSession](t, e.postJSON(t, "/v1/images", map[string]any{"image": b64(scenePNG(t))}))
	rec := e.postJSON(t, "/v1/images/"+session.ID+"/detect", api.DetectOptions{Categories: []string{"red"},
		Exemplars: []api.ExemplarCategory{{Label: "sky", Embeddings: [][]float32{{0, 0, 2}}}}})
	if resp := decodeBody[api.DetectResponse](t, rec); rec.Code != http.StatusOK || labels(resp.Detections) != "red,sky" {
		t.Fatalf("re-scoring with exemplars: %d %s", rec.Code, rec.Body.String())
	}
}
