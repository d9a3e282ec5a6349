package handlers

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/vild/vild/apikey"
	"github.com/vild/vild/labelstudio"
)

// The Label Studio backend sits behind the key guard like /v1: no key 401,
// a key without detect 403, the key as a basic-auth password (Label
// Studio's way) or a bearer token 200; its problems are the server's.
func TestLabelStudioRoutesGuarded(t *testing.T) {
	e := newKeyEnv(t, keyBackends[0], func(d *Deps) { d.LabelStudio = &labelstudio.Settings{} })
	detect := e.key(t, "label-studio", apikey.KeyLimits{}, apikey.ScopeDetect)
	writer := e.key(t, "writer", apikey.KeyLimits{}, apikey.ScopeVocabulariesWrite)
	basic := func(token string) []string {
		return []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("any-user:"+token))}
	}
	uri := "data:image/png;base64," + base64.StdEncoding.EncodeToString(scenePNG(t))
	body := `{"tasks":[{"id":1,"data":{"image":"` + uri + `"}}],"project":"1.1733220000","label_config":` +
		`"<View><Image name=\"image\" value=\"$image\"/><RectangleLabels name=\"label\" toName=\"image\"><Label value=\"red\"/><Label value=\"blue\"/></RectangleLabels></View>"}`
	predict := func(hdr ...string) (int, string) {
		rec := e.do(t, "POST", "/labelstudio/predict", "application/json", strings.NewReader(body), hdr...)
		return rec.Code, rec.Body.String()
	}

	wantProblem(t, e.do(t, "GET", "/labelstudio/health", "", nil), 401, "unauthorized")
	if code, b := predict(); code != 401 {
		t.Fatalf("no key: %d %s", code, b)
	}
	if code, b := predict(basic("vild_nonsense")...); code != 401 {
		t.Fatalf("a bad basic-auth password: %d %s", code, b)
	}
	wantProblem(t, e.do(t, "POST", "/labelstudio/predict", "application/json", strings.NewReader(body), basic(writer)...), 403, "forbidden")
	for _, hdr := range [][]string{basic(detect), bearer(detect)} {
		code, b := predict(hdr...)
		var resp labelstudio.PredictResponse
		if err := json.Unmarshal([]byte(b), &resp); code != 200 || err != nil || len(resp.Results) != 1 ||
			len(resp.Results[0].Result) != 2 || resp.Results[0].Result[0].Value.RectangleLabels[0] == resp.Results[0].Result[1].Value.RectangleLabels[0] ||
			resp.ModelVersion != "colors@0123" {
			t.Fatalf("%s: %d %s", hdr[1][:6], code, b)
		}
	}
	if rec := e.do(t, "GET", "/labelstudio/health", "", nil, basic(detect)...); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"UP"`) {
		t.Fatalf("health: %d %s", rec.Code, rec.Body)
	}
	// The server's translator answers the backend's problems; a refused URL
	// (no fetch allow-list here) is one.
	bad := strings.Replace(body, uri, "http://169.254.169.254/latest/meta-data/", 1)
	p := wantProblem(t, e.do(t, "POST", "/labelstudio/predict", "application/json", strings.NewReader(bad), basic(detect)...), 422, "url-refused")
	if p.Instance != "/labelstudio/predict" || strings.Contains(p.Detail, "169.254") {
		t.Fatalf("problem %+v", p)
	}
}
