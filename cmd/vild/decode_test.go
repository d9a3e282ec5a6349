package main

import (
	"bytes"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/vild/vild/handlers"
	"github.com/vild/vild/handlers/handlerstest"
)

// The served wiring (imageio's decoder and its sentinels) gives each hostile
// image of the hostile-image list (docs/api.md) its documented answer; imageio's own tests
// prove the allocations stay small.
func TestServedDecoderAnswers(t *testing.T) {
	cfg := testServeConfig(t)
	m := colorModel(&handlerstest.ColorDetector{})
	h, err := handlers.New(handlers.Deps{Detector: m.Detector, Embedder: m.Embedder,
		Decoder: imageDecoder(cfg.API), Model: m.Info, Config: cfg.API})
	if err != nil {
		t.Fatal(err)
	}
	fixture := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("..", "..", "imageio", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	photo := fixture("photo.jpg")
	for _, c := range []struct {
		name   string
		data   []byte
		status int
		slug   string
	}{
		{"JPEG", photo, 200, ""},
		{"PNG", scenePNG(t), 200, ""},
		{"WebP", fixture("lossless.webp"), 200, ""},
		{"1,000-frame GIF", fixture("frames1000.gif"), 200, ""},
		{"TIFF", []byte("II*\x00\x08\x00\x00\x00rest-of-tiff"), 415, "unsupported-image"},
		{"BMP", append([]byte("BM"), make([]byte, 60)...), 415, "unsupported-image"},
		{"SVG", []byte(`<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>`), 415, "unsupported-image"},
		{"HTML", []byte(`<!doctype html><html><body>hi</body></html>`), 415, "unsupported-image"},
		{"100k x 100k header", fixture("bomb.png"), 422, "image-too-large"},
		{"JPEG with 310 scans", fixture("many_scans.jpg"), 422, "image-too-large"},
		{"truncated JPEG", photo[:len(photo)/2], 400, "corrupt-image"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Content-Type claims PNG throughout: the magic bytes decide.
			req := httptest.NewRequest("POST", "/v1/detect?categories=red", bytes.NewReader(c.data))
			req.Header.Set("Content-Type", "image/png")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.status, rec.Body)
			}
			if c.slug != "" && !bytes.Contains(rec.Body.Bytes(), []byte(`"urn:vild:problem:`+c.slug+`"`)) {
				t.Fatalf("body %s, want problem %s", rec.Body, c.slug)
			}
		})
	}
}
