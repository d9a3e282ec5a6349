package handlers

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vild/vild/api"
	"github.com/vild/vild/vocabulary"
)

// greenScene is a white picture with one pure green square: red and blue each
// score exactly 0.5 on it, so at a threshold above that nothing is found.
func greenScene(t testing.TB) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 160, 120))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(40, 30, 100, 90), image.NewUniform(color.RGBA{0, 255, 0, 255}), image.Point{}, draw.Src)
	return encodePNG(t, img)
}

// A single image whose categories are not in the picture answers
// "detections":[] by every body kind and by re-scoring a registered image;
// a batch answer carries results only.
func TestDetectNoMatchAnswersEmptyDetections(t *testing.T) {
	e := newEnv(t, nil)
	wantEmpty := func(t *testing.T, body string) {
		t.Helper()
		if !strings.Contains(body, `"detections":[]`) {
			t.Fatalf("answer %s lacks \"detections\":[]", body)
		}
	}
	t.Run("json", func(t *testing.T) {
		rec := e.postJSON(t, "/v1/detect", map[string]any{"image": b64(greenScene(t)), "categories": []string{"red", "blue"}, "score_threshold": 0.6})
		if rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		wantEmpty(t, rec.Body.String())
		if strings.Contains(rec.Body.String(), `"results"`) {
			t.Fatalf("single answer %s carries results", rec.Body)
		}
	})
	t.Run("negatives absorb everything", func(t *testing.T) {
		rec := e.postJSON(t, "/v1/detect", map[string]any{"image": b64(scenePNG(t)), "categories": []string{"green"}, "negatives": []string{"red", "blue"}})
		if rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		wantEmpty(t, rec.Body.String())
	})
	t.Run("multipart", func(t *testing.T) {
		body, ct := multipartBody(t, [][2]string{{"categories", "red,blue"}, {"score_threshold", "0.6"}}, greenScene(t))
		rec := e.do(t, "POST", "/v1/detect", ct, body)
		if rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		wantEmpty(t, rec.Body.String())
	})
	t.Run("raw", func(t *testing.T) {
		rec := e.do(t, "POST", "/v1/detect?categories=red,blue&score_threshold=0.6", "image/png", bytes.NewReader(greenScene(t)))
		if rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		wantEmpty(t, rec.Body.String())
	})
	t.Run("registered image", func(t *testing.T) {
		s := decodeBody[api.ImageSession](t, e.postJSON(t, "/v1/images", map[string]any{"image": b64(greenScene(t))}))
		rec := e.postJSON(t, "/v1/images/"+s.ID+"/detect", map[string]any{"categories": []string{"red", "blue"}, "score_threshold": 0.6})
		if rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		wantEmpty(t, rec.Body.String())
	})
	t.Run("batch", func(t *testing.T) {
		rec := e.postJSON(t, "/v1/detect", map[string]any{"images": []string{b64(greenScene(t)), b64(scenePNG(t))},
			"categories": []string{"red", "blue"}, "score_threshold": 0.6})
		if rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		top := decodeBody[map[string]any](t, rec)
		if _, ok := top["detections"]; ok {
			t.Fatalf("batch answer %s carries detections", rec.Body)
		}
		r := decodeBody[api.DetectResponse](t, rec)
		if len(r.Results) != 2 || r.Results[0].Detections == nil || len(r.Results[0].Detections) != 0 || labels(r.Results[1].Detections) != "blue,red" {
			t.Fatalf("batch results %+v", r.Results)
		}
	})
}

// An explicit empty category list answers 422 empty-vocabulary by every body
// kind; categories left out still mean the model's own vocabulary.
func TestEmptyCategoriesAnswer422(t *testing.T) {
	e := newEnv(t, func(d *Deps) {
		d.Model.SetCategories([]api.ModelCategory{{Name: "red", Split: "base"}, {Name: "blue", Split: "novel"}})
	})
	img := scenePNG(t)
	s := decodeBody[api.ImageSession](t, e.postJSON(t, "/v1/images", map[string]any{"image": b64(img)}))
	multipart := func(fields ...[2]string) func(t *testing.T) *httptest.ResponseRecorder {
		return func(t *testing.T) *httptest.ResponseRecorder {
			body, ct := multipartBody(t, fields, img)
			return e.do(t, "POST", "/v1/detect", ct, body)
		}
	}
	raw := func(query string) func(t *testing.T) *httptest.ResponseRecorder {
		return func(t *testing.T) *httptest.ResponseRecorder {
			return e.do(t, "POST", "/v1/detect"+query, "image/png", bytes.NewReader(img))
		}
	}
	jsonBody := func(path, body string) func(t *testing.T) *httptest.ResponseRecorder {
		return func(t *testing.T) *httptest.ResponseRecorder { return e.postJSON(t, path, body) }
	}
	for _, c := range []struct {
		name string
		do   func(t *testing.T) *httptest.ResponseRecorder
	}{
		{"json", jsonBody("/v1/detect", `{"image":"`+b64(img)+`","categories":[]}`)},
		{"json batch", jsonBody("/v1/detect", `{"images":["`+b64(img)+`"],"categories":[]}`)},
		{"json re-scoring", jsonBody("/v1/images/"+s.ID+"/detect", `{"categories":[]}`)},
		{"multipart empty field", multipart([2]string{"categories", ""})},
		{"multipart commas and spaces", multipart([2]string{"categories", " , ,"})},
		{"multipart options", multipart([2]string{"options", `{"categories":[]}`})},
		{"multipart options and empty field", multipart([2]string{"options", `{"categories":[]}`}, [2]string{"categories", ","})},
		{"query empty", raw("?categories=")},
		{"query commas", raw("?categories=,%20,")},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := wantProblem(t, c.do(t), 422, "empty-vocabulary")
			if !strings.Contains(p.Detail, "leave categories out") {
				t.Fatalf("detail %q does not say how to get the model's vocabulary", p.Detail)
			}
		})
	}
	if e.det.ScoreCalls.Load() != 0 {
		t.Fatal("an empty vocabulary reached the detector")
	}
	// Left out: the model's own vocabulary (red, blue).
	for _, c := range []struct {
		name string
		do   func(t *testing.T) *httptest.ResponseRecorder
	}{
		{"json", jsonBody("/v1/detect", `{"image":"`+b64(img)+`"}`)},
		{"json null", jsonBody("/v1/detect", `{"image":"`+b64(img)+`","categories":null}`)},
		{"json re-scoring", jsonBody("/v1/images/"+s.ID+"/detect", `{}`)},
		{"multipart", multipart([2]string{"score_threshold", "0.3"})},
		{"multipart options and a category", multipart([2]string{"options", `{"categories":[]}`}, [2]string{"categories", "red"})},
		{"query", raw("?score_threshold=0.3")},
	} {
		t.Run("left out/"+c.name, func(t *testing.T) {
			rec := c.do(t)
			if rec.Code != 200 {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			want := "blue,red"
			if strings.HasPrefix(c.name, "multipart options and") {
				want = "red,red"
			}
			if got := labels(decodeBody[api.DetectResponse](t, rec).Detections); got != want {
				t.Fatalf("labels %q, want %q", got, want)
			}
		})
	}
	wantProblem(t, e.postJSON(t, "/v1/detect", `{"image":"`+b64(img)+`","categories":[],"vocabulary":"v"}`), 400, "invalid-request")
}

// Vocabulary files that do not load are listed as unavailable (name, reason,
// since; never the file's content or path), counted in a metric and logged;
// the others are served, and writing a name again makes it available.
func TestUnavailableVocabularies(t *testing.T) {
	dir := t.TempDir()
	seed, err := vocabulary.OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	spec := vocabulary.Spec{Categories: []string{"red", "blue"}}
	if _, _, err := seed.Put(context.Background(), "colours", spec, spec.Digest(), ""); err != nil {
		t.Fatal(err)
	}
	for f, c := range map[string]string{
		"broken.json": `{"name":"broken","categories":["SECRET-CONTENT"`,
		"wrong.json":  `{"name":"colours","categories":["red"],"etag":"x"}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	store, err := vocabulary.OpenFileStore(dir)
	if err != nil {
		t.Fatalf("a bad file stopped the store: %v", err)
	}
	var logged bytes.Buffer
	e := newEnv(t, func(d *Deps) {
		d.Vocabularies = store
		d.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	})
	rec := e.do(t, "GET", "/v1/vocabularies", "", nil)
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), "SECRET") || strings.Contains(rec.Body.String(), dir) {
		t.Fatalf("the list shows a file's content or path: %s", rec.Body)
	}
	list := decodeBody[api.VocabularyList](t, rec)
	if len(list.Vocabularies) != 1 || list.Vocabularies[0].Name != "colours" {
		t.Fatalf("served %+v", list.Vocabularies)
	}
	got := map[string]string{}
	for _, u := range list.Unavailable {
		got[u.Name] = u.Reason
		if u.Since.IsZero() {
			t.Fatalf("%+v has no since", u)
		}
	}
	if len(got) != 2 || got["broken"] != "the file does not parse as a vocabulary" || got["wrong"] != "the file holds another vocabulary's name" {
		t.Fatalf("unavailable %+v", list.Unavailable)
	}
	if n := testutil.ToFloat64(e.deps.Metrics.quarantined); n != 2 {
		t.Fatalf("vild_vocabulary_files_quarantined_total = %v, want 2", n)
	}
	for _, name := range []string{"broken", "wrong"} {
		if !strings.Contains(logged.String(), "vocabulary="+name) {
			t.Fatalf("%s not logged: %s", name, logged.String())
		}
	}
	// The good one detects; an unavailable one is not found.
	if rec := e.postJSON(t, "/v1/detect", map[string]any{"image": b64(scenePNG(t)), "vocabulary": "colours"}); rec.Code != 200 {
		t.Fatalf("detect with the good vocabulary: %d %s", rec.Code, rec.Body)
	}
	wantProblem(t, e.do(t, "GET", "/v1/vocabularies/broken", "", nil), 404, "vocabulary-not-found")
	// Written again: available, no longer listed as unavailable.
	if rec := e.do(t, "PUT", "/v1/vocabularies/broken", "application/json", strings.NewReader(`{"categories":["red"]}`)); rec.Code != 201 {
		t.Fatalf("rewrite: %d %s", rec.Code, rec.Body)
	}
	list = decodeBody[api.VocabularyList](t, e.do(t, "GET", "/v1/vocabularies", "", nil))
	if len(list.Vocabularies) != 2 || len(list.Unavailable) != 1 || list.Unavailable[0].Name != "wrong" {
		t.Fatalf("after the rewrite: %+v", list)
	}
	// A store with nothing set aside lists unavailable as [].
	clean := newEnv(t, nil)
	if rec := clean.do(t, "GET", "/v1/vocabularies", "", nil); !strings.Contains(rec.Body.String(), `"unavailable":[]`) {
		t.Fatalf("clean list %s", rec.Body)
	}
}

// failingStore is a vocabulary store whose writes the storage refuses.
type failingStore struct {
	vocabulary.Store
	err error
}

func (f failingStore) Put(ctx context.Context, name string, spec vocabulary.Spec, etag, ifMatch string) (*vocabulary.Entry, bool, error) {
	return nil, false, f.err
}

func (f failingStore) Delete(ctx context.Context, name, ifMatch string) error { return f.err }

// A write that the storage refuses answers 507 insufficient-storage (full) or
// 503 storage-read-only with Retry-After (read-only, not permitted), never a
// path; reads go on. The file store leaving nothing half-written is
// vocabulary's TestFileStoreWriteFailures.
func TestVocabularyWriteFailures(t *testing.T) {
	for _, c := range []struct {
		name   string
		err    error
		status int
		slug   string
	}{
		{"disk full", fmt.Errorf("vocabulary: store: %w: %w", vocabulary.ErrStorageFull,
			&os.PathError{Op: "write", Path: "/data/vocabularies/.vocab-123", Err: syscall.ENOSPC}), 507, "insufficient-storage"},
		{"read-only", fmt.Errorf("vocabulary: store: %w: %w", vocabulary.ErrStorageReadOnly,
			&os.PathError{Op: "open", Path: "/data/vocabularies/.vocab-123", Err: syscall.EROFS}), 503, "storage-read-only"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ok := newEnv(t, nil)
			if rec := ok.do(t, "PUT", "/v1/vocabularies/v", "application/json", strings.NewReader(`{"categories":["red"]}`)); rec.Code != 201 {
				t.Fatalf("create: %d", rec.Code)
			}
			e := newEnv(t, func(d *Deps) { d.Vocabularies = failingStore{Store: ok.store, err: c.err} })
			for _, rec := range []*httptest.ResponseRecorder{
				e.do(t, "PUT", "/v1/vocabularies/v", "application/json", strings.NewReader(`{"categories":["blue"]}`)),
				e.do(t, "DELETE", "/v1/vocabularies/v", "", nil),
			} {
				p := wantProblem(t, rec, c.status, c.slug)
				if strings.Contains(p.Detail, "/data") || !strings.Contains(p.Detail, "nothing was written") {
					t.Fatalf("detail %q", p.Detail)
				}
				if ra := rec.Header().Get("Retry-After"); (c.status == 503) != (ra != "") {
					t.Fatalf("status %d with Retry-After %q", c.status, ra)
				}
			}
			if rec := e.do(t, "GET", "/v1/vocabularies/v", "", nil); rec.Code != 200 {
				t.Fatalf("read after a refused write: %d", rec.Code)
			}
		})
	}
}
