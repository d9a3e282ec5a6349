package handlers

import (
	"bytes"
	"context"
	"fmt"
	"github.com/vild/vild/annotate"
	"github.com/vild/vild/api"
	"github.com/vild/vild/inference"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"io"
	"mime/multipart"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/handlers/handlerstest"
)

func TestDetectJSON(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.postJSON(t, "/v1/detect", map[string]any{
		"image": b64(scenePNG(t)), "categories": []string{"red ball", "blue box", "green"},
	})
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	r := decodeBody[api.DetectResponse](t, rec)
	if r.Model != "colors@0123" || !strings.HasPrefix(r.VocabularyDigest, "sha256:") {
		t.Fatalf("model %q digest %q", r.Model, r.VocabularyDigest)
	}
	if r.Image == nil || r.Image.Width != 200 || r.Image.Height != 120 {
		t.Fatalf("image %+v", r.Image)
	}
	if got := labels(r.Detections); got != "blue box,red ball" {
		t.Fatalf("labels %q", got)
	}
	for _, d := range r.Detections {
		want := [4]float32{20, 20, 60, 60}
		if d.Label == "blue box" {
			want = [4]float32{100, 40, 150, 90}
		}
		for i := range want {
			if diff := d.Box[i] - want[i]; diff < -8 || diff > 8 {
				t.Fatalf("%s box %v, want about %v", d.Label, d.Box, want)
			}
		}
		if len(d.RunnersUp) != 2 {
			t.Fatalf("runners-up %+v, want the 2 other labels", d.RunnersUp)
		}
	}
	if r.TimingsMS == nil || r.TimingsMS.Total < r.TimingsMS.Backbone {
		t.Fatalf("timings %+v", r.TimingsMS)
	}
}

func TestDetectLabelsPerBox(t *testing.T) {
	e := newEnv(t, nil)
	req := func(perBox any) *httptest.ResponseRecorder {
		return e.postJSON(t, "/v1/detect", map[string]any{
			"image": b64(scenePNG(t)), "categories": []string{"red ball", "blue box", "green"},
			"score_threshold": 0, "runners_up": 1, "labels_per_box": perBox,
		})
	}
	rec := req(3)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	r := decodeBody[api.DetectResponse](t, rec)
	// two regions, each reported with all three labels
	if got := labels(r.Detections); got != "blue box,blue box,green,green,red ball,red ball" {
		t.Fatalf("labels %q", got)
	}
	perBox := map[[4]float32][]string{}
	for _, d := range r.Detections {
		perBox[d.Box] = append(perBox[d.Box], d.Label)
		if len(d.RunnersUp) != 1 || d.RunnersUp[0].Label == d.Label {
			t.Fatalf("%s: runners-up %+v, want the region's best other label", d.Label, d.RunnersUp)
		}
	}
	if len(perBox) != 2 {
		t.Fatalf("boxes %v, want 2 regions with 3 labels each", perBox)
	}
	// the query string carries it too; 1 is the bundled default
	q := e.do(t, "POST", "/v1/detect?categories=red+ball,blue+box,green&score_threshold=0&labels_per_box=2",
		"image/png", bytes.NewReader(scenePNG(t)))
	if q.Code != 200 || len(decodeBody[api.DetectResponse](t, q).Detections) != 4 {
		t.Fatalf("query labels_per_box=2: status %d: %s", q.Code, q.Body)
	}
	for _, bad := range []any{0, 21, -1} {
		p := wantProblem(t, req(bad), 400, "invalid-option")
		if !strings.Contains(p.Detail, "labels_per_box must be 1 to 20") {
			t.Fatalf("detail %q", p.Detail)
		}
	}
	wantProblem(t, e.do(t, "POST", "/v1/detect?categories=red&labels_per_box=two", "image/png",
		bytes.NewReader(scenePNG(t))), 400, "invalid-request")
}

// "scores": softmax is always there; a bad value is a 400, and stable scores
// of a model without a category list (this fake's) a 422.
func TestDetectScoresOption(t *testing.T) {
	e := newEnv(t, nil)
	ok := e.do(t, "POST", "/v1/detect?categories=red+ball&scores=softmax", "image/png", bytes.NewReader(scenePNG(t)))
	if ok.Code != 200 {
		t.Fatalf("scores=softmax: status %d: %s", ok.Code, ok.Body)
	}
	p := wantProblem(t, e.do(t, "POST", "/v1/detect?categories=red&scores=calibrated", "image/png",
		bytes.NewReader(scenePNG(t))), 400, "invalid-option")
	if !strings.Contains(p.Detail, "scores must be stable or softmax") {
		t.Fatalf("detail %q", p.Detail)
	}
	wantProblem(t, e.do(t, "POST", "/v1/detect?categories=red&scores=stable", "image/png",
		bytes.NewReader(scenePNG(t))), 422, "scores-unsupported")
}

func multipartBody(t testing.TB, fields [][2]string, files ...[]byte) (*bytes.Buffer, string) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, f := range files {
		w, err := mw.CreateFormFile("image", "scene.png")
		if err != nil {
			t.Fatal(err)
		}
		w.Write(f)
	}
	for _, f := range fields {
		mw.WriteField(f[0], f[1])
	}
	mw.Close()
	return &b, mw.FormDataContentType()
}

func TestDetectMultipartAndRaw(t *testing.T) {
	e := newEnv(t, nil)
	body, ct := multipartBody(t, [][2]string{{"categories", "red, green"}, {"categories", "yellow"},
		{"score_threshold", "0.5"}, {"options", `{"negatives":["blue"]}`}}, scenePNG(t))
	rec := e.do(t, "POST", "/v1/detect", ct, body)
	if rec.Code != 200 {
		t.Fatalf("multipart: %d %s", rec.Code, rec.Body)
	}
	if got := labels(decodeBody[api.DetectResponse](t, rec).Detections); got != "red" {
		t.Fatalf("multipart labels %q, want red (blue is a negative)", got)
	}

	rec = e.do(t, "POST", "/v1/detect?categories=red,blue&max_detections=1", "image/png", bytes.NewReader(scenePNG(t)))
	if rec.Code != 200 {
		t.Fatalf("raw: %d %s", rec.Code, rec.Body)
	}
	if n := len(decodeBody[api.DetectResponse](t, rec).Detections); n != 1 {
		t.Fatalf("raw: %d detections, want max_detections=1", n)
	}
}

func TestDetectOptions(t *testing.T) {
	e := newEnv(t, nil)
	img := b64(scenePNG(t))
	cases := []struct {
		name string
		req  map[string]any
		want string
	}{
		{"synonyms share a label", map[string]any{"categories": []string{"warm", "blue"}, "synonyms": map[string][]string{"warm": {"red"}}}, "blue,warm"},
		{"negatives are never reported", map[string]any{"categories": []string{"red"}, "negatives": []string{"blue"}}, "red"},
		{"per-category threshold", map[string]any{"categories": []string{"red", "orange", "blue"}, "thresholds": map[string]float32{"red": 0.95}}, "blue"},
		{"score threshold", map[string]any{"categories": []string{"red", "orange", "blue"}, "score_threshold": 0.95}, "blue"},
		{"head", map[string]any{"categories": []string{"red", "blue"}, "head": "text"}, "blue,red"},
		{"duplicates collapse", map[string]any{"categories": []string{"red", " Red ", "blue"}}, "blue,red"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.req["image"] = img
			rec := e.postJSON(t, "/v1/detect", c.req)
			if rec.Code != 200 {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			if got := labels(decodeBody[api.DetectResponse](t, rec).Detections); got != c.want {
				t.Fatalf("labels %q, want %q", got, c.want)
			}
		})
	}
}

func TestDetectBatch(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.postJSON(t, "/v1/detect", map[string]any{
		"images": []string{b64(scenePNG(t)), b64([]byte("not an image at all")), b64(scenePNG(t))}, "categories": []string{"red", "blue"},
	})
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	r := decodeBody[api.DetectResponse](t, rec)
	if len(r.Results) != 3 || r.Detections != nil {
		t.Fatalf("results %+v", r)
	}
	if labels(r.Results[0].Detections) != "blue,red" || labels(r.Results[2].Detections) != "blue,red" {
		t.Fatalf("batch results %+v", r.Results)
	}
	if p := r.Results[1].Error; p == nil || p.Status != 415 {
		t.Fatalf("bad image result %+v, want a 415 problem", r.Results[1])
	}
	rec = e.postJSON(t, "/v1/detect", map[string]any{"images": []string{b64(scenePNG(t))}, "categories": []string{"red"}}, "Accept", "image/png")
	wantProblem(t, rec, 406, "not-acceptable")
}

func TestDetectAnnotated(t *testing.T) {
	e := newEnv(t, nil)
	for _, accept := range []string{"image/png", "image/jpeg"} {
		rec := e.postJSON(t, "/v1/detect", map[string]any{"image": b64(scenePNG(t)), "categories": []string{"red", "blue"}}, "Accept", accept)
		if rec.Code != 200 || rec.Header().Get("Content-Type") != accept {
			t.Fatalf("%s: %d %q", accept, rec.Code, rec.Header().Get("Content-Type"))
		}
		img, format, err := image.Decode(rec.Body)
		if err != nil || img.Bounds().Dx() != 200 || img.Bounds().Dy() != 120 {
			t.Fatalf("%s: %v %v %v", accept, format, err, img)
		}
		if rec.Header().Get("X-Detections") != "2" {
			t.Fatalf("X-Detections %q", rec.Header().Get("X-Detections"))
		}
		if accept == "image/png" {
			// The red box's left edge at x=20 takes the label colour of "red"; the
			// white background inside the blue box's margin stays white.
			want := annotate.LabelColor("red")
			if got := color.RGBAModel.Convert(img.At(20, 40)).(color.RGBA); got != want {
				t.Fatalf("box edge %v, want %v", got, want)
			}
			if got := color.RGBAModel.Convert(img.At(5, 110)).(color.RGBA); got != (color.RGBA{255, 255, 255, 255}) {
				t.Fatalf("background %v changed", got)
			}
		}
	}
	rec := e.postJSON(t, "/v1/detect", map[string]any{"image": b64(scenePNG(t)), "categories": []string{"red"}}, "Accept", "text/html")
	wantProblem(t, rec, 406, "not-acceptable")
}

// Each image-carrying body kind at cap−1 and cap is served; at cap+1 it is
// refused with 413, by Content-Length before any byte is read, or while
// reading when the length is not announced.
func TestBodyCap(t *testing.T) {
	png := scenePNG(t)
	limit := int64(len(png) + 1000)
	jsonLimit := 2 * limit
	e := newEnv(t, func(d *Deps) { d.Config.MaxBodyBytes = limit; d.Config.MaxJSONImageBytes = jsonLimit })
	padPNG := func(n int) []byte { return append(append([]byte{}, png...), make([]byte, n-len(png))...) }
	const boundary = "vild-test-boundary"
	multipartOf := func(img []byte) []byte {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		mw.SetBoundary(boundary)
		mw.WriteField("categories", "red")
		w, _ := mw.CreateFormFile("image", "scene.png")
		w.Write(img)
		mw.Close()
		return b.Bytes()
	}
	overhead := len(multipartOf(nil))
	kinds := []struct {
		name, ct string
		cap      int64
		body     func(size int) []byte // a valid request of exactly size bytes
	}{
		{"raw", "image/png", limit, padPNG},
		{"multipart", "multipart/form-data; boundary=" + boundary, limit, func(n int) []byte { return multipartOf(padPNG(n - overhead)) }},
		{"base64 JSON", "application/json", jsonLimit, func(n int) []byte {
			b := []byte(`{"image":"` + b64(png) + `","categories":["red"]}`)
			return append(b, bytes.Repeat([]byte(" "), n-len(b))...) // whitespace after the value is allowed
		}},
	}
	for _, k := range kinds {
		for _, c := range []struct {
			name    string
			size    int64
			chunked bool
			want    int
		}{{"cap-1", k.cap - 1, false, 200}, {"cap", k.cap, false, 200}, {"cap+1", k.cap + 1, false, 413}, {"cap+1 chunked", k.cap + 1, true, 413}} {
			t.Run(k.name+" "+c.name, func(t *testing.T) {
				body := k.body(int(c.size))
				if int64(len(body)) != c.size {
					t.Fatalf("built %d bytes, want %d", len(body), c.size)
				}
				url := "/v1/detect"
				if k.name == "raw" {
					url += "?categories=red"
				}
				req := httptest.NewRequest("POST", url, bytes.NewReader(body))
				req.Header.Set("Content-Type", k.ct)
				if c.chunked {
					req.ContentLength = -1
				}
				rec := newRecorder(e, req)
				if c.want == 413 {
					wantProblem(t, rec, 413, "body-too-large")
				} else if rec.Code != c.want {
					t.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			})
		}
		t.Run(k.name+" refused by Content-Length before reading", func(t *testing.T) {
			body := &unreadBody{}
			req := httptest.NewRequest("POST", "/v1/detect?categories=red", body)
			req.Header.Set("Content-Type", k.ct)
			req.ContentLength = k.cap + 1
			wantProblem(t, newRecorder(e, req), 413, "body-too-large")
			if body.reads != 0 {
				t.Fatalf("%d reads of a body whose Content-Length is over the cap", body.reads)
			}
		})
	}
	// The default caps, 20 MiB raw and multipart and 28 MiB base64 JSON.
	d := newEnv(t, nil)
	for _, c := range []struct {
		ct   string
		size int64
		want int
	}{{"image/png", 20 << 20, 0}, {"multipart/form-data; boundary=x", 20 << 20, 0}, {"application/json", 28 << 20, 0},
		{"image/png", 20<<20 + 1, 413}, {"multipart/form-data; boundary=x", 20<<20 + 1, 413}, {"application/json", 28<<20 + 1, 413}} {
		body := &unreadBody{}
		req := httptest.NewRequest("POST", "/v1/detect?categories=red", body)
		req.Header.Set("Content-Type", c.ct)
		req.ContentLength = c.size
		rec := newRecorder(d, req)
		switch {
		case c.want == 413:
			wantProblem(t, rec, 413, "body-too-large")
		case rec.Code == 413 || body.reads == 0:
			t.Fatalf("%s of %d bytes (the default cap) refused unread: %d", c.ct, c.size, rec.Code)
		}
	}
}

// unreadBody is an empty request body that counts its reads.
type unreadBody struct{ reads int }

func (b *unreadBody) Read(p []byte) (int, error) { b.reads++; return 0, io.EOF }

func TestMultipartLimits(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	e := newEnv(t, nil)
	var many [][2]string
	for i := 0; i < 1000; i++ {
		many = append(many, [2]string{"categories", "red"})
	}
	manyBody, manyCT := multipartBody(t, many, scenePNG(t))
	twoBody, twoCT := multipartBody(t, [][2]string{{"categories", "red"}}, scenePNG(t), scenePNG(t))
	unknownBody, unknownCT := multipartBody(t, [][2]string{{"colour", "red"}}, scenePNG(t))
	var hdr bytes.Buffer
	mw := multipart.NewWriter(&hdr)
	fmt.Fprintf(&hdr, "--%s\r\nContent-Disposition: form-data; name=\"categories\"\r\nX-Long: %s\r\n\r\nred\r\n--%s--\r\n",
		mw.Boundary(), strings.Repeat("a", 1<<20), mw.Boundary())
	for _, c := range []struct {
		name, ct string
		body     *bytes.Buffer
		slug     string
	}{
		{"1000 parts", manyCT, manyBody, "too-many-parts"},
		{"two files", twoCT, twoBody, "invalid-multipart"},
		{"unknown field", unknownCT, unknownBody, "invalid-multipart"},
		{"1 MiB header line", mw.FormDataContentType(), &hdr, "invalid-multipart"},
		{"no boundary", "multipart/form-data", bytes.NewBufferString("x"), "invalid-multipart"},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantProblem(t, e.do(t, "POST", "/v1/detect", c.ct, c.body), 400, c.slug)
		})
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("multipart left %d temporary files", len(ents))
	}
}

func TestJSONStrict(t *testing.T) {
	e := newEnv(t, nil)
	img := b64(scenePNG(t))
	long := strings.Repeat("x", 129)
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprintf("thing %d", i)
	}
	manyJSON, _ := jsonString(many)
	cases := []struct{ name, body, slug string }{
		{"deep nesting", strings.Repeat("[", 100000) + strings.Repeat("]", 100000), "invalid-json"},
		{"deep nesting in a field", `{"image":"` + img + `","categories":["red"],"synonyms":` + strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000) + `}`, "invalid-json"},
		{"bad base64", `{"image":"%%%not base64","categories":["red"]}`, "invalid-json"},
		{"unknown field", `{"image":"` + img + `","categories":["red"],"colour":"red"}`, "invalid-json"},
		{"trailing data", `{"image":"` + img + `","categories":["red"]} {}`, "invalid-json"},
		{"wrong type", `{"image":"` + img + `","categories":"red"}`, "invalid-json"},
		{"empty body", ``, "invalid-json"},
		{"no image", `{"categories":["red"]}`, "missing-image"},
		{"image and images", `{"image":"` + img + `","images":["` + img + `"],"categories":["red"]}`, "invalid-request"},
		{"too many categories", `{"image":"` + img + `","categories":` + manyJSON + `}`, "too-many-categories"},
		{"empty category", `{"image":"` + img + `","categories":["red",""]}`, "invalid-category"},
		{"long category", `{"image":"` + img + `","categories":["` + long + `"]}`, "invalid-category"},
		{"control character", `{"image":"` + img + `","categories":["re\u0000d"]}`, "invalid-category"},
		{"synonym of nothing", `{"image":"` + img + `","categories":["red"],"synonyms":{"blue":["navy"]}}`, "invalid-synonyms"},
		{"negative is a category", `{"image":"` + img + `","categories":["red"],"negatives":["red"]}`, "invalid-negatives"},
		{"threshold out of range", `{"image":"` + img + `","categories":["red"],"thresholds":{"red":2}}`, "invalid-thresholds"},
		{"bad head", `{"image":"` + img + `","categories":["red"],"head":"both"}`, "invalid-option"},
		{"bad threshold", `{"image":"` + img + `","categories":["red"],"score_threshold":-1}`, "invalid-option"},
		{"vocabulary and categories", `{"image":"` + img + `","categories":["red"],"vocabulary":"v"}`, "invalid-request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := wantProblem(t, e.postJSON(t, "/v1/detect", c.body), 400, c.slug)
			if strings.Contains(p.Detail, long) || strings.Contains(p.Detail, "colour") {
				t.Fatalf("detail echoes input: %q", p.Detail)
			}
		})
	}
	if e.det.RegionsCalls.Load() != 0 {
		t.Fatal("a rejected request reached the detector")
	}
}

func TestImageFormats(t *testing.T) {
	e := newEnv(t, nil)
	bigHeader := func(w, h uint32) []byte { // a PNG whose IHDR claims w×h
		var b bytes.Buffer
		png.Encode(&b, image.NewGray(image.Rect(0, 0, 1, 1)))
		data := b.Bytes()
		put := func(off int, v uint32) {
			data[off], data[off+1], data[off+2], data[off+3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		}
		put(16, w)
		put(20, h)
		put(29, crc32.ChecksumIEEE(data[12:29]))
		return data
	}
	cases := []struct {
		name   string
		data   []byte
		status int
		slug   string
	}{
		{"TIFF", []byte("II*\x00\x08\x00\x00\x00rest-of-tiff"), 415, "unsupported-image"},
		{"BMP", append([]byte("BM"), make([]byte, 60)...), 415, "unsupported-image"},
		{"SVG", []byte(`<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>`), 415, "unsupported-image"},
		{"HTML", []byte(`<!doctype html><html><body>hi</body></html>`), 415, "unsupported-image"},
		{"100k x 100k header", bigHeader(100000, 100000), 422, "image-too-large"},
		{"truncated PNG", scenePNG(t)[:100], 400, "corrupt-image"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Content-Type says PNG: the magic bytes decide.
			wantProblem(t, e.do(t, "POST", "/v1/detect?categories=red", "image/png", bytes.NewReader(c.data)), c.status, c.slug)
		})
	}
	t.Run("text/plain body", func(t *testing.T) {
		wantProblem(t, e.do(t, "POST", "/v1/detect", "text/plain", strings.NewReader("hello")), 415, "unsupported-content-type")
	})
	t.Run("animated GIF: first frame", func(t *testing.T) {
		pal := color.Palette{color.White, color.RGBA{255, 0, 0, 255}, color.RGBA{0, 0, 255, 255}}
		anim := &gif.GIF{}
		for i := 0; i < 1000; i++ {
			fr := image.NewPaletted(image.Rect(0, 0, 64, 64), pal)
			c := uint8(1)
			if i > 0 {
				c = 2
			}
			for y := 20; y < 40; y++ {
				for x := 20; x < 40; x++ {
					fr.SetColorIndex(x, y, c)
				}
			}
			anim.Image = append(anim.Image, fr)
			anim.Delay = append(anim.Delay, 1)
		}
		var b bytes.Buffer
		if err := gif.EncodeAll(&b, anim); err != nil {
			t.Fatal(err)
		}
		rec := e.do(t, "POST", "/v1/detect?categories=red,blue", "image/gif", &b)
		if rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		if got := labels(decodeBody[api.DetectResponse](t, rec).Detections); got != "red" {
			t.Fatalf("labels %q, want the first frame's red", got)
		}
	})
}

// A decoder panic is answered 400 corrupt-image, any other panic 500; the
// process and the worker slot survive both.
func TestPanicsContained(t *testing.T) {
	det := &panickyDetector{ColorDetector: &handlerstest.ColorDetector{}}
	e := newEnv(t, func(d *Deps) {
		d.Detector = det
		d.Config.Workers, d.Config.QueueLength = 1, 1
		d.Decoder = inference.DecoderFunc(func(ctx context.Context, data []byte) (image.Image, error) {
			if string(data) == "boom" {
				panic("decoder bug")
			}
			return handlerstest.Decoder{MaxSide: 1000, MaxPixels: 1000000}.Decode(ctx, data)
		})
	})
	wantProblem(t, e.do(t, "POST", "/v1/detect?categories=red", "image/png", strings.NewReader("boom")), 400, "corrupt-image")
	wantProblem(t, e.do(t, "POST", "/v1/images", "image/png", strings.NewReader("boom")), 400, "corrupt-image")
	det.panics.Store(true)
	p := wantProblem(t, e.do(t, "POST", "/v1/detect?categories=red", "image/png", bytes.NewReader(scenePNG(t))), 500, "internal")
	if strings.Contains(p.Detail, "detector bug") || strings.Contains(p.Detail, "goroutine") {
		t.Fatalf("500 detail leaks the panic: %q", p.Detail)
	}
	if c := testutil.ToFloat64(e.deps.Metrics.requests.WithLabelValues("/v1/detect", "POST", "500")); c != 1 {
		t.Fatalf("500 counter %v, want 1", c)
	}
	det.panics.Store(false)
	// The process and the single worker slot survive.
	for i := 0; i < 3; i++ {
		if rec := e.do(t, "POST", "/v1/detect?categories=red", "image/png", bytes.NewReader(scenePNG(t))); rec.Code != 200 {
			t.Fatalf("after the panics: %d %s", rec.Code, rec.Body)
		}
	}
}

// panickyDetector panics in Regions while panics is set.
type panickyDetector struct {
	*handlerstest.ColorDetector
	panics atomic.Bool
}

func (d *panickyDetector) Regions(ctx context.Context, img image.Image) (*detector.Regions, error) {
	if d.panics.Load() {
		panic("detector bug")
	}
	return d.ColorDetector.Regions(ctx, img)
}

func TestOutputCap(t *testing.T) {
	e := newEnv(t, func(d *Deps) { d.Detector = &handlerstest.ColorDetector{Extra: 400} })
	rec := e.postJSON(t, "/v1/detect", map[string]any{"image": b64(scenePNG(t)), "categories": []string{"red", "blue"}, "max_detections": 5000})
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	r := decodeBody[api.DetectResponse](t, rec)
	if len(r.Detections) != 300 {
		t.Fatalf("%d detections, want the cap 300", len(r.Detections))
	}
	for _, d := range r.Detections {
		if d.Box[0] < 0 || d.Box[1] < 0 || d.Box[2] > 200 || d.Box[3] > 120 {
			t.Fatalf("box %v outside the 200x120 image", d.Box)
		}
	}
}
