package handlers

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/vild/vild/api"
)

// A model without a mask head answers a request for masks 422
// masks-unsupported, whichever way the option comes (JSON, query string,
// image session); a format other than rle or polygon is 400 invalid-option.
func TestMasksUnsupported(t *testing.T) {
	e := newEnv(t, nil)
	img := scenePNG(t)
	for _, f := range []string{"rle", "polygon"} {
		rec := e.postJSON(t, "/v1/detect", api.DetectRequest{Image: img, DetectOptions: api.DetectOptions{Masks: f}})
		p := wantProblem(t, rec, http.StatusUnprocessableEntity, "masks-unsupported")
		if !strings.Contains(p.Detail, "mask head") {
			t.Errorf("detail %q", p.Detail)
		}
	}
	wantProblem(t, e.do(t, "POST", "/v1/detect?masks=rle", "image/png", bytes.NewReader(img)),
		http.StatusUnprocessableEntity, "masks-unsupported")
	wantProblem(t, e.postJSON(t, "/v1/detect", api.DetectRequest{Image: img, DetectOptions: api.DetectOptions{Masks: "square"}}),
		http.StatusBadRequest, "invalid-option")
	id := decodeBody[api.ImageSession](t, e.postJSON(t, "/v1/images", map[string]any{"image": b64(img)})).ID
	wantProblem(t, e.postJSON(t, "/v1/images/"+id+"/detect", api.DetectOptions{Masks: "rle"}),
		http.StatusUnprocessableEntity, "masks-unsupported")
	// Without masks nothing changes: no mask fields in the answer.
	rec := e.postJSON(t, "/v1/detect", api.DetectRequest{Image: img})
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), `"mask`) || strings.Contains(rec.Body.String(), "polygons") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if rec := e.do(t, "GET", "/v1/models", "", nil); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"masks":false`) {
		t.Fatalf("models: %d %s", rec.Code, rec.Body)
	}
}
