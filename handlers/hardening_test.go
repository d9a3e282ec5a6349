package handlers

import (
	"bytes"
	"image"
	"image/color"
	"image/draw"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vild/vild/api"
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
