package client_test

import (
	"bytes"
	"context"
	"errors"
	"image"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vild/vild/api"
	"github.com/vild/vild/apikey"
	"github.com/vild/vild/client"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/handlers"
	"github.com/vild/vild/handlers/handlerstest"
	"github.com/vild/vild/observe"
	"github.com/vild/vild/vocabulary"
)

// colourServer serves the real HTTP handlers over the colour detector of
// handlerstest (no neural model), with request IDs, on 127.0.0.1.
func colourServer(t testing.TB, mod func(*handlers.Deps)) *httptest.Server {
	t.Helper()
	store, err := vocabulary.OpenFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := handlers.DefaultConfig()
	model := api.Model{ID: "colors@0123", Name: "colors", Digest: "sha256:0123", EmbeddingDim: handlerstest.Dim,
		Templates: []string{"a photo of a {}."},
		Defaults:  detector.Options{ScoreThreshold: 0.3, NMSIoU: 0.5, MaxDetections: 100}}
	model.SetCategories([]api.ModelCategory{{Name: "red", Split: "base"}, {Name: "blue", Split: "novel"}})
	deps := handlers.Deps{
		Detector: &handlerstest.ColorDetector{}, Embedder: &handlerstest.ColorEmbedder{},
		Decoder: handlerstest.Decoder{MaxSide: cfg.MaxImageSide, MaxPixels: cfg.MaxImagePixels},
		Model:   model, Vocabularies: store, Config: cfg,
		Middleware: []func(http.Handler) http.Handler{observe.Options{Log: slog.New(slog.DiscardHandler)}.Middleware},
	}
	if mod != nil {
		mod(&deps)
	}
	h, err := handlers.New(deps)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h) // 127.0.0.1
	t.Cleanup(srv.Close)
	return srv
}

// scenePNG is a white 200×120 picture with a red square at (20,20)-(60,60)
// and a blue one at (100,40)-(150,90).
func scenePNG(testing.TB) []byte { return examplePicture() }

func newClient(t testing.TB, url string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// labels are the detections' labels, sorted.
func labels(ds []detector.Detection) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Label)
	}
	slices.Sort(out)
	return out
}

// problem is err's *client.Error, or the test fails.
func problem(t *testing.T, err error, status int, slug string) *client.Error {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *client.Error", err, err)
	}
	if e.Status != status || e.Slug() != slug {
		t.Fatalf("got %d %q (%v), want %d %s", e.Status, e.Slug(), e, status, slug)
	}
	if e.Detail == "" || e.RequestID == "" || e.Type != api.ProblemType(slug) {
		t.Fatalf("problem lacks detail, request ID or type: %+v", e)
	}
	return e
}

func near(a, b [4]float32, tol float32) bool {
	for i := range a {
		if d := a[i] - b[i]; d > tol || d < -tol {
			return false
		}
	}
	return true
}

// Detection, one image and a batch, through the real handlers: the options
// reach the server (categories, synonyms, max detections, head), the model's
// own categories answer when none are given, and a problem comes back typed.
func TestDetect(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, colourServer(t, nil).URL)
	img := scenePNG(t)

	res, err := c.Detect(ctx, img, api.DetectOptions{Categories: []string{"red square", "blue square"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := labels(res.Detections); !slices.Equal(got, []string{"blue square", "red square"}) {
		t.Fatalf("labels %v", got)
	}
	for _, d := range res.Detections {
		want := [4]float32{20, 20, 60, 60}
		if d.Label == "blue square" {
			want = [4]float32{100, 40, 150, 90}
		}
		if !near(d.Box, want, 2) {
			t.Errorf("%s at %v, want about %v", d.Label, d.Box, want)
		}
	}
	if res.Model != "colors@0123" || res.Image == nil || *res.Image != (api.ImageSize{Width: 200, Height: 120}) ||
		res.TimingsMS == nil || !strings.HasPrefix(res.VocabularyDigest, "sha256:") {
		t.Fatalf("answer %+v", res)
	}

	// No options at all: the model's categories (red, blue).
	res, err = c.Detect(ctx, img, api.DetectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := labels(res.Detections); !slices.Equal(got, []string{"blue", "red"}) {
		t.Fatalf("default vocabulary: labels %v", got)
	}

	// Synonyms, negatives and a cap travel in the options JSON.
	res, err = c.Detect(ctx, img, api.DetectOptions{Categories: []string{"mug", "green"},
		Synonyms: map[string][]string{"mug": {"crimson red"}}, Negatives: []string{"blue"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := labels(res.Detections); !slices.Equal(got, []string{"mug"}) {
		t.Fatalf("synonym and negative: labels %v", got)
	}
	one := 1
	res, err = c.Detect(ctx, img, api.DetectOptions{Categories: []string{"red", "blue"}, MaxDetections: &one})
	if err != nil || len(res.Detections) != 1 {
		t.Fatalf("max_detections 1: %+v, %v", res, err)
	}

	// Nothing of the kind in the picture: [] rather than nil.
	res, err = c.Detect(ctx, img, api.DetectOptions{Categories: []string{"green"}, Negatives: []string{"red", "blue"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Detections == nil || len(res.Detections) != 0 {
		t.Fatalf("detections %#v, want []", res.Detections)
	}

	_, err = c.Detect(ctx, img, api.DetectOptions{Categories: []string{"red"}, Head: "bogus"})
	e := problem(t, err, http.StatusBadRequest, "invalid-option")
	if e.Instance != "/v1/detect" || e.Method != http.MethodPost || e.Path != "/v1/detect" ||
		!strings.Contains(e.Error(), "400 invalid-option") || !strings.Contains(e.Error(), e.RequestID) {
		t.Fatalf("error %q: %+v", e.Error(), e)
	}
	_, err = c.Detect(ctx, []byte("not a picture"), api.DetectOptions{})
	problem(t, err, http.StatusUnsupportedMediaType, "unsupported-image")

	// A batch: one result per image, in order; the bad image fails alone.
	res, err = c.DetectBatch(ctx, [][]byte{img, img[:len(img)/2], img},
		api.DetectOptions{Categories: []string{"red"}, Negatives: []string{"blue"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != 3 || res.Detections != nil {
		t.Fatalf("batch answer %+v", res)
	}
	for i, r := range res.Results {
		if i == 1 {
			if r.Error == nil || r.Error.Type != api.ProblemType("corrupt-image") || len(r.Detections) != 0 {
				t.Fatalf("result 1: %+v, %+v", r, r.Error)
			}
			continue
		}
		if r.Error != nil || !slices.Equal(labels(r.Detections), []string{"red"}) {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	_, err = c.DetectBatch(ctx, slices.Repeat([][]byte{img}, 9), api.DetectOptions{})
	problem(t, err, http.StatusBadRequest, "invalid-request") // over --max-batch (8)

	// The picture with boxes drawn.
	for _, mt := range []string{"image/png", "image/jpeg"} {
		a, err := c.DetectAnnotated(ctx, img, api.DetectOptions{Categories: []string{"red", "blue"}}, mt)
		if err != nil {
			t.Fatal(err)
		}
		pic, format, err := image.Decode(bytes.NewReader(a.Image))
		if err != nil || "image/"+format != mt || a.ContentType != mt || a.Detections != 2 || pic.Bounds().Dx() != 200 {
			t.Fatalf("%s: format %q, %+v, %d detections: %v", mt, format, a.ContentType, a.Detections, err)
		}
	}
	if _, err := c.DetectAnnotated(ctx, img, api.DetectOptions{}, "image/gif"); err == nil {
		t.Fatal("image/gif was asked for")
	}
}

// Registered images: create, describe, re-score, forget.
func TestImages(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, colourServer(t, nil).URL)
	s, err := c.CreateImage(ctx, scenePNG(t))
	if err != nil {
		t.Fatal(err)
	}
	if s.ID == "" || s.Regions != 2 || s.Image != (api.ImageSize{Width: 200, Height: 120}) || time.Until(s.ExpiresAt) <= 0 {
		t.Fatalf("session %+v", s)
	}
	got, err := c.GetImage(ctx, s.ID)
	if err != nil || got.ID != s.ID || got.Regions != 2 || !got.ExpiresAt.Equal(s.ExpiresAt) {
		t.Fatalf("get: %+v, %v", got, err)
	}
	res, err := c.DetectImage(ctx, s.ID, api.DetectOptions{Categories: []string{"blue"}, Negatives: []string{"red"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(labels(res.Detections), []string{"blue"}) || res.TimingsMS.Backbone != 0 {
		t.Fatalf("re-scored %+v", res)
	}
	if err := c.DeleteImage(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetImage(ctx, s.ID)
	e := problem(t, err, http.StatusNotFound, "image-not-found")
	if e.Instance != "/v1/images/{id}" {
		t.Fatalf("instance %q", e.Instance)
	}
	problem(t, c.DeleteImage(ctx, s.ID), http.StatusNotFound, "image-not-found")
	_, err = c.DetectImage(ctx, "no/such id", api.DetectOptions{})
	problem(t, err, http.StatusNotFound, "image-not-found") // escaped: one path segment
}

// Vocabularies with their ETags: create, replace, conditional get, If-Match.
func TestVocabularies(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, colourServer(t, nil).URL)
	spec := vocabulary.Spec{Categories: []string{"red", " blue ", "Red"}, Negatives: []string{"white"}}
	e, created, err := c.PutVocabulary(ctx, "kitchen", spec, "")
	if err != nil {
		t.Fatal(err)
	}
	if !created || e.Name != "kitchen" || !slices.Equal(e.Categories, []string{"red", "blue"}) || !strings.HasPrefix(e.ETag, "sha256:") {
		t.Fatalf("created %v, %+v", created, e)
	}
	again, created, err := c.PutVocabulary(ctx, "kitchen", spec, e.ETag) // If-Match the current ETag
	if err != nil || created || again.ETag != e.ETag {
		t.Fatalf("replace: created %v, %+v, %v", created, again, err)
	}
	_, _, err = c.PutVocabulary(ctx, "kitchen", vocabulary.Spec{Categories: []string{"cyan"}}, "sha256:stale")
	problem(t, err, http.StatusPreconditionFailed, "precondition-failed")
	_, _, err = c.PutVocabulary(ctx, "garden", spec, "*") // "*": only an existing one
	problem(t, err, http.StatusPreconditionFailed, "precondition-failed")
	_, _, err = c.PutVocabulary(ctx, "bad name!", spec, "")
	problem(t, err, http.StatusBadRequest, "invalid-vocabulary-name")

	got, err := c.GetVocabulary(ctx, "kitchen")
	if err != nil || got.ETag != e.ETag || !slices.Equal(got.Categories, e.Categories) {
		t.Fatalf("get: %+v, %v", got, err)
	}
	if same, changed, err := c.GetVocabularyIfChanged(ctx, "kitchen", e.ETag); err != nil || changed || same != nil {
		t.Fatalf("unchanged: %+v %v %v", same, changed, err)
	}
	if same, changed, err := c.GetVocabularyIfChanged(ctx, "kitchen", `"`+e.ETag+`"`); err != nil || changed || same != nil {
		t.Fatalf("unchanged, quoted: %+v %v %v", same, changed, err)
	}
	for _, etag := range []string{"sha256:old", ""} {
		if fresh, changed, err := c.GetVocabularyIfChanged(ctx, "kitchen", etag); err != nil || !changed || fresh.ETag != e.ETag {
			t.Fatalf("changed since %q: %+v %v %v", etag, fresh, changed, err)
		}
	}
	list, err := c.ListVocabularies(ctx)
	if err != nil || len(list.Vocabularies) != 1 || list.Vocabularies[0].Name != "kitchen" ||
		list.Vocabularies[0].Categories != 2 || list.Unavailable == nil {
		t.Fatalf("list: %+v, %v", list, err)
	}

	res, err := c.Detect(ctx, scenePNG(t), api.DetectOptions{Vocabulary: "kitchen"})
	if err != nil || !slices.Equal(labels(res.Detections), []string{"blue", "red"}) || res.VocabularyDigest != e.ETag {
		t.Fatalf("detect with the vocabulary: %+v, %v", res, err)
	}

	problem(t, c.DeleteVocabulary(ctx, "kitchen", "sha256:stale"), http.StatusPreconditionFailed, "precondition-failed")
	if err := c.DeleteVocabulary(ctx, "kitchen", e.ETag); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetVocabulary(ctx, "kitchen")
	problem(t, err, http.StatusNotFound, "vocabulary-not-found")
}

// Embeddings, the model, the probes.
func TestEmbeddingsModelsHealth(t *testing.T) {
	ctx := context.Background()
	health := &handlers.Health{}
	c := newClient(t, colourServer(t, func(d *handlers.Deps) { d.Health = health }).URL)
	if err := c.Livez(ctx); err != nil {
		t.Fatal(err)
	}
	// Not ready: answered at once, not retried.
	start := time.Now()
	problem(t, c.Readyz(ctx), http.StatusServiceUnavailable, "not-ready")
	if time.Since(start) > 500*time.Millisecond {
		t.Fatalf("readyz took %v: retried", time.Since(start))
	}
	health.SetReady(true)
	if err := c.Readyz(ctx); err != nil {
		t.Fatal(err)
	}

	emb, err := c.EmbedTexts(ctx, []string{"red", "deep blue"})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]float32{{1, 0, 0}, {0, 0, 1}}
	if emb.Dim != 3 || emb.Model != "colors@0123" || len(emb.Embeddings) != 2 {
		t.Fatalf("embeddings %+v", emb)
	}
	for i, e := range emb.Embeddings {
		if !slices.Equal(e.Embedding, want[i]) {
			t.Errorf("%s: %v, want %v", e.Text, e.Embedding, want[i])
		}
	}
	_, err = c.EmbedTexts(ctx, nil)
	problem(t, err, http.StatusBadRequest, "invalid-request")

	ms, err := c.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms.Models) != 1 || ms.Models[0].ID != "colors@0123" || len(ms.Models[0].CategoryList) != 2 ||
		ms.Models[0].CategoryList[1].Name != "blue" || ms.Models[0].CategoryList[1].Split != "novel" {
		t.Fatalf("models %+v", ms)
	}
}

// API keys go as Bearer tokens; the server's 401 and 403 come back typed.
func TestAPIKeys(t *testing.T) {
	ctx := context.Background()
	keys := apikey.NewMemory()
	token, k, err := apikey.New("reader", []apikey.Scope{apikey.ScopeDetect}, apikey.KeyLimits{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Create(ctx, k); err != nil {
		t.Fatal(err)
	}
	url := colourServer(t, func(d *handlers.Deps) { d.Keys = keys }).URL

	_, err = newClient(t, url).Models(ctx)
	problem(t, err, http.StatusUnauthorized, "unauthorized")
	_, err = newClient(t, url, client.WithAPIKey("vild_not-a-key")).Models(ctx)
	problem(t, err, http.StatusUnauthorized, "unauthorized")

	c := newClient(t, url, client.WithAPIKey(token))
	if _, err := c.Models(ctx); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.PutVocabulary(ctx, "kitchen", vocabulary.Spec{Categories: []string{"red"}}, "")
	problem(t, err, http.StatusForbidden, "forbidden") // the key lacks vocabularies:write
}

// Every request carries the User-Agent, and the configured http.Client makes it.
func TestUserAgentAndHTTPClient(t *testing.T) {
	var mu sync.Mutex
	var agents []string
	srv := colourServer(t, func(d *handlers.Deps) {
		d.Middleware = append(d.Middleware, func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				agents = append(agents, r.UserAgent())
				mu.Unlock()
				next.ServeHTTP(w, r)
			})
		})
	})
	tr := &countingTransport{next: http.DefaultTransport}
	c := newClient(t, srv.URL+"/", client.WithUserAgent("vild-cli/1.2.3"), client.WithHTTPClient(&http.Client{Transport: tr}))
	if _, err := c.Models(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Livez(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := "vild-cli/1.2.3 vild-go-client/" + client.Version()
	if len(agents) != 2 || agents[0] != want || agents[1] != want || c.UserAgent() != want {
		t.Fatalf("agents %q, want %q", agents, want)
	}
	if tr.n != 2 {
		t.Fatalf("the configured client made %d requests, want 2", tr.n)
	}
}

type countingTransport struct {
	next http.RoundTripper
	n    int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n++
	return c.next.RoundTrip(r)
}

func TestNewChecksTheURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://host", "http://", "http://host/?q=1", "http://host/#x", "http://[::1"} {
		if _, err := client.New(u); err == nil {
			t.Errorf("New(%q) took it", u)
		}
	}
	if _, err := client.New("http://host", client.WithRetry(client.RetryPolicy{})); err == nil {
		t.Error("a policy of 0 attempts was taken")
	}
}
