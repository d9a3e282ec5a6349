package labelstudio

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vild/vild/admission"
	"github.com/vild/vild/api"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/handlers/handlerstest"
	"github.com/vild/vild/inference"
	"github.com/vild/vild/request"
	"github.com/vild/vild/urlfetch"
	"github.com/vild/vild/vocabulary"
)

// scenePNG is a white 200×120 picture with a red square at (20,20)-(60,60)
// and a blue one at (100,40)-(150,90).
func scenePNG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 200, 120))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(20, 20, 60, 60), image.NewUniform(color.RGBA{255, 0, 0, 255}), image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(100, 40, 150, 90), image.NewUniform(color.RGBA{0, 0, 255, 255}), image.Point{}, draw.Src)
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

const colourConfig = `<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image" score_threshold="0.5">
    <Label value="red" alias="R"/>
    <Label value="blue" predicted_values="navy, blue"/>
    <Label value="green"/>
  </RectangleLabels>
</View>`

// fakeLabelStudio serves uploads to requests with the right token.
type fakeLabelStudio struct {
	*httptest.Server
	hits  atomic.Int32
	token string
	got   atomic.Value // the last Authorization header
}

func newFakeLabelStudio(t *testing.T, token string, png []byte) *fakeLabelStudio {
	f := &fakeLabelStudio{token: token}
	f.got.Store("")
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		f.got.Store(r.Header.Get("Authorization"))
		if f.token != "" && r.Header.Get("Authorization") != "Token "+f.token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if !strings.HasPrefix(r.URL.Path, "/data/upload/") {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(png)
	}))
	t.Cleanup(f.Close)
	return f
}

// backend is the resource over the colour detector, its problems written
// as {status, slug}.
func backend(t *testing.T, set Settings) http.Handler {
	t.Helper()
	det := &handlerstest.ColorDetector{}
	run := &inference.Runner{Detector: det, Decoder: handlerstest.Decoder{MaxSide: 4096, MaxPixels: 1 << 24},
		Queue: admission.New(1, 4, time.Second, admission.Gauges{})}
	vocabs := &request.Vocabularies{Builder: vocabulary.NewBuilder(&handlerstest.ColorEmbedder{}, nil, 8),
		MaxNames: 100, MaxStoredNames: 100, MaxNameLength: 64}
	opts := &request.Options{Defaults: detector.Options{ScoreThreshold: 0.3, NMSIoU: 0.5, MaxDetections: 100},
		Caps: request.Caps{MaxDetections: 100, MaxRunnersUp: 5, MaxLabelsPerBox: 5}}
	fail := func(w http.ResponseWriter, r *http.Request, err error) {
		var e *api.Error
		status, slug := http.StatusInternalServerError, "internal"
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &e):
			status, slug = e.Status, e.Slug
		case errors.As(err, &mbe):
			status, slug = http.StatusRequestEntityTooLarge, "body-too-large"
		case errors.Is(err, handlerstest.ErrUnsupported):
			status, slug = http.StatusUnsupportedMediaType, "unsupported-image"
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "slug": slug, "detail": err.Error()})
	}
	return New(set, Server{Run: run, Vocabs: vocabs, Opts: opts, Model: "colors@0", MaxBodyBytes: 1 << 20, Fail: fail}).Routes()
}

func fetcher(t *testing.T, o urlfetch.Options) *urlfetch.Fetcher {
	t.Helper()
	f, err := urlfetch.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

func post(t *testing.T, h http.Handler, path string, body any) (int, []byte) {
	t.Helper()
	b, _ := json.Marshal(body)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(b)))
	return rec.Code, rec.Body.Bytes()
}

func predict(t *testing.T, h http.Handler, images ...string) (int, PredictResponse, string) {
	t.Helper()
	tasks := make([]map[string]any, len(images))
	for i, im := range images {
		tasks[i] = map[string]any{"id": 100 + i, "data": map[string]any{"image": im}}
	}
	code, body := post(t, h, "/predict", map[string]any{"tasks": tasks, "project": "7.1733220000", "label_config": colourConfig,
		"params": map[string]any{"login": nil, "password": nil, "context": nil}})
	var resp PredictResponse
	if code == 200 {
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
	}
	var p struct{ Slug string }
	_ = json.Unmarshal(body, &p)
	return code, resp, p.Slug
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-3 }

// The colour scene's two squares come back in percent of 200×120, the red
// one under its alias.
func checkColourPrediction(t *testing.T, p Prediction) {
	t.Helper()
	want := map[string][4]float64{
		"R":    {100 * 20.0 / 200, 100 * 20.0 / 120, 100 * 40.0 / 200, 100 * 40.0 / 120},
		"blue": {100 * 100.0 / 200, 100 * 40.0 / 120, 100 * 50.0 / 200, 100 * 50.0 / 120},
	}
	if len(p.Result) != 2 || p.ModelVersion != "colors@0" {
		t.Fatalf("prediction %+v", p)
	}
	var sum float64
	for _, r := range p.Result {
		w, ok := want[r.Value.RectangleLabels[0]]
		v := r.Value
		if !ok || r.FromName != "label" || r.ToName != "image" || r.Type != "rectanglelabels" || r.OriginalWidth != 200 || r.OriginalHeight != 120 ||
			!near(v.X, w[0]) || !near(v.Y, w[1]) || !near(v.Width, w[2]) || !near(v.Height, w[3]) || v.Rotation != 0 || r.Score < 0.5 || r.Score > 1 {
			t.Errorf("region %+v, want %v", r, w)
		}
		sum += r.Score
	}
	if !near(p.Score, sum/2) {
		t.Errorf("task score %v, want the mean %v", p.Score, sum/2)
	}
}

func TestPredictDataURI(t *testing.T) {
	h := backend(t, Settings{})
	uri := "data:image/png;base64," + base64.StdEncoding.EncodeToString(scenePNG(t))
	code, resp, slug := predict(t, h, uri, uri)
	if code != 200 || len(resp.Results) != 2 || resp.ModelVersion != "colors@0" {
		t.Fatalf("%d %s %+v", code, slug, resp)
	}
	for _, p := range resp.Results {
		checkColourPrediction(t, p)
	}
}

// Upload paths are fetched from the configured Label Studio with its token.
func TestPredictUploadFromConfiguredLabelStudio(t *testing.T) {
	ls := newFakeLabelStudio(t, "secret-token", scenePNG(t))
	base, _ := url.Parse(ls.URL)
	h := backend(t, Settings{URL: base, Token: "secret-token",
		Fetcher: fetcher(t, urlfetch.Options{AllowHosts: []string{"127.0.0.1"}, AllowCIDRs: loopback})})
	code, resp, slug := predict(t, h, "/data/upload/7/abc-scene.png")
	if code != 200 {
		t.Fatalf("%d %s", code, slug)
	}
	checkColourPrediction(t, resp.Results[0])
	// An absolute URL on Label Studio's own origin gets the token too.
	if code, _, slug := predict(t, h, ls.URL+"/data/upload/7/abc-scene.png"); code != 200 {
		t.Fatalf("absolute upload URL: %d %s", code, slug)
	}
	// Another host (on the list) never sees the token.
	other := newFakeLabelStudio(t, "", scenePNG(t))
	h = backend(t, Settings{URL: base, Token: "secret-token",
		Fetcher: fetcher(t, urlfetch.Options{AllowHosts: []string{"127.0.0.1", "localhost"}, AllowCIDRs: loopback})})
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1) + "/data/upload/1/x.png"
	if code, _, slug := predict(t, h, otherURL); code != 200 || other.got.Load() != "" {
		t.Fatalf("other host: %d %s, Authorization %q", code, slug, other.got.Load())
	}
	// Label Studio refusing the fetch is a bad gateway.
	h = backend(t, Settings{URL: base, Token: "wrong",
		Fetcher: fetcher(t, urlfetch.Options{AllowHosts: []string{"127.0.0.1"}, AllowCIDRs: loopback})})
	if code, _, slug := predict(t, h, "/data/upload/7/abc-scene.png"); code != 502 || slug != "url-fetch-failed" {
		t.Fatalf("wrong token: %d %s", code, slug)
	}
}

// Without a configured address, /setup's hostname and token serve the project.
func TestSetupHostname(t *testing.T) {
	ls := newFakeLabelStudio(t, "project-token", scenePNG(t))
	h := backend(t, Settings{Fetcher: fetcher(t, urlfetch.Options{AllowHosts: []string{"127.0.0.1"}, AllowCIDRs: loopback})})
	if code, _, slug := predict(t, h, "/data/upload/7/abc-scene.png"); code != 422 || slug != "no-label-studio-url" {
		t.Fatalf("before setup: %d %s", code, slug)
	}
	code, body := post(t, h, "/setup", map[string]any{"project": "7.1733220000", "schema": colourConfig,
		"hostname": ls.URL, "access_token": "project-token", "extra_params": nil})
	var sr SetupResponse
	if err := json.Unmarshal(body, &sr); code != 200 || err != nil || sr.ModelVersion != "colors@0" {
		t.Fatalf("setup: %d %s", code, body)
	}
	code, resp, slug := predict(t, h, "/data/upload/7/abc-scene.png")
	if code != 200 {
		t.Fatalf("after setup: %d %s", code, slug)
	}
	checkColourPrediction(t, resp.Results[0])
	if code, body := post(t, h, "/setup", map[string]any{"project": 8, "schema": "<View/>"}); code != 400 || !strings.Contains(string(body), "invalid-label-config") {
		t.Fatalf("setup with a config without rectangles: %d %s", code, body)
	}
}

// The fetch policy holds for task URLs: loopback, link-local and private
// addresses are refused and never reached, whatever host the allow-list
// lets through (urlfetch's tests refuse redirects to them too).
func TestPredictRefusesInternalURLs(t *testing.T) {
	inside := newFakeLabelStudio(t, "", scenePNG(t))
	h := backend(t, Settings{Fetcher: fetcher(t, urlfetch.Options{AllowHosts: []string{"*"}})})
	for _, u := range []string{
		inside.URL + "/data/upload/1/x.png",
		strings.Replace(inside.URL, "127.0.0.1", "localhost", 1) + "/data/upload/1/x.png",
		"http://169.254.169.254/latest/meta-data/",
		"http://10.0.0.1/x.png", "http://[fd00::1]/x.png", "http://[::ffff:127.0.0.1]/x.png",
	} {
		if code, _, slug := predict(t, h, u); code != 422 || slug != "url-refused" {
			t.Errorf("%s: %d %s, want 422 url-refused", u, code, slug)
		}
	}
	if inside.hits.Load() != 0 {
		t.Fatal("an internal server was reached")
	}
	// A redirect from an allowed address (this machine's Label Studio,
	// let through by its CIDR) to one outside the CIDR is refused too.
	var to atomic.Value
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, to.Load().(string), http.StatusFound)
	}))
	t.Cleanup(redirector.Close)
	h = backend(t, Settings{Fetcher: fetcher(t, urlfetch.Options{AllowHosts: []string{"*"}, AllowCIDRs: loopback})})
	for _, target := range []string{"http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/x.png", "http://[::1]:1/x.png", "http://[::ffff:192.168.0.1]/x.png"} {
		to.Store(target)
		if code, _, slug := predict(t, h, redirector.URL+"/x.png"); code != 422 || slug != "url-refused" {
			t.Errorf("redirect to %s: %d %s, want 422 url-refused", target, code, slug)
		}
	}
}

func TestPredictBadRequests(t *testing.T) {
	h := backend(t, Settings{})
	uri := "data:image/png;base64," + base64.StdEncoding.EncodeToString(scenePNG(t))
	nine := make([]string, DefaultMaxTasks+1)
	for i := range nine {
		nine[i] = uri
	}
	if code, _, slug := predict(t, h, nine...); code != 422 || slug != "too-many-tasks" {
		t.Errorf("too many tasks: %d %s", code, slug)
	}
	if code, _, slug := predict(t, h); code != 422 || slug != "too-many-tasks" {
		t.Errorf("no tasks: %d %s", code, slug)
	}
	for src, want := range map[string]string{
		"s3://bucket/a.png":              "unsupported-image-source",
		"a.png":                          "unsupported-image-source",
		"data:image/png,notbase64":       "invalid-task",
		"data:image/png;base64,%%%":      "invalid-task",
		"https://example.com/a.png":      "url-refused", // no fetcher: no URLs
		"/data/upload/1/a.png":           "no-label-studio-url",
		"data:image/png;base64,aGVsbG8=": "unsupported-image", // "hello"
	} {
		code, _, slug := predict(t, h, src)
		if slug != want {
			t.Errorf("%s: %d %s, want %s", src, code, slug, want)
		}
	}
	code, body := post(t, h, "/predict", map[string]any{"tasks": []any{map[string]any{"id": 1, "data": map[string]any{"img": uri}}}, "label_config": colourConfig})
	if code != 400 || !strings.Contains(string(body), "invalid-task") {
		t.Errorf("no image field: %d %s", code, body)
	}
	code, body = post(t, h, "/predict", map[string]any{"tasks": []any{map[string]any{"id": 1, "data": map[string]any{"image": uri}}}, "label_config": "<View/>"})
	if code != 400 || !strings.Contains(string(body), "invalid-label-config") {
		t.Errorf("config without rectangles: %d %s", code, body)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/predict", strings.NewReader(`{"tasks": 3}`)))
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid-json") {
		t.Errorf("tasks not a list: %d %s", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/predict", strings.NewReader(`{"tasks": ["`+strings.Repeat("x", 2<<20)+`"]}`)))
	if rec.Code != 413 {
		t.Errorf("body over the cap: %d", rec.Code)
	}
}

func TestHealth(t *testing.T) {
	h := backend(t, Settings{})
	for _, path := range []string{"/health"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var got Health
		if err := json.Unmarshal(rec.Body.Bytes(), &got); rec.Code != 200 || err != nil || got.Status != "UP" || got.ModelVersion != "colors@0" {
			t.Errorf("%s: %d %s", path, rec.Code, rec.Body)
		}
	}
}
