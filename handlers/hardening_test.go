package handlers

import (
	"bytes"
	"image"
	"image/color"
	"image/draw"
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
