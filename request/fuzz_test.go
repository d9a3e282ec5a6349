package request

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/vild/vild/api"
)

// The request readers' fuzz targets: any body or query string is read
// without a panic into options that hold what the readers promise, or is
// refused with an *api.Error (or the body cap's *http.MaxBytesError) whose
// client message is one of the fixed forms below: it never echoes input.
// Run one for a while with
//
//	go test ./request -run '^$' -fuzz '^FuzzDecodeJSON$' -fuzztime 60s
//
// (docs/api.md lists every target). The seeds are the f.Add calls and the
// files under testdata/fuzz/<target>; a crasher the fuzzer finds is written
// there too and stays as a regression seed.

// fuzzLimits are small, so that the fuzzer reaches every limit.
var fuzzLimits = Limits{MaxBodyBytes: 1 << 14, MaxJSONImageBytes: 1 << 14, MaxJSONBytes: 512,
	MaxParts: 6, MaxPartHeaderBytes: 256, MaxBatch: 3}

// knownField is a JSON field name of the detection request, or a multipart
// field / query parameter: the only names a message may hold.
const knownField = `(image|images|options|categories|vocabulary|synonyms|negatives|thresholds|score_threshold|max_detections|nms_iou|head|runners_up|labels_per_box|masks|scores)`

// jsonTypes are the types a wrong-type message may want.
const jsonTypes = `(string|boolean|integer|number|array|object|another type)`

// clientMessages are every form a request error's message takes; N stands
// for a number (a limit or a byte offset).
var clientMessages = regexp.MustCompile(`^(` + strings.Join([]string{
	`the request body is empty`,
	`invalid JSON body: (syntax error at byte N|field "` + knownField + `(\.` + knownField + `)*" has the wrong type \(want ` + jsonTypes + `\)|the body has the wrong type \(want ` + jsonTypes + `\)|unknown field \(the API docs list the accepted fields\)|nested too deeply|image must be a baseN string|image data URL must be baseN|image is not valid baseN|unexpected end of input|malformed|trailing data after the JSON value)`,
	`give image or images, not both`,
	`images must hold N to N images`,
	`the request carries no image`,
	`an image is empty`,
	`invalid multipart body`,
	`a multipart body may have at most N parts`,
	`a part's headers exceed N bytes`,
	`send exactly one part named image`,
	`field ` + knownField + ` exceeds N bytes`,
	`send at most one options field`,
	`unknown multipart field \(want image((, ` + knownField + `)* or options)?\)`,
	`unknown parameter \(want ` + knownField + `(, ` + knownField + `)* or ` + knownField + `\)`,
	knownField + ` given more than once`,
	knownField + ` must be a number`,
	knownField + ` must be an integer`,
}, "|") + `)$`)

var digits = regexp.MustCompile(`[0-9]+`)

// checkError fails unless err is a client error with a fixed-form message.
func checkError(t *testing.T, err error) {
	t.Helper()
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return // the translator answers 413 with the limit
	}
	var e *api.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *api.Error", err, err)
	}
	if e.Status < 400 || e.Status > 499 || e.Slug == "" || e.Msg == "" {
		t.Fatalf("error %+v: want a 4xx with a slug and a message", e)
	}
	if msg := digits.ReplaceAllString(e.Msg, "N"); !clientMessages.MatchString(msg) {
		t.Fatalf("message %q is not one of the fixed forms (it may echo input)", e.Msg)
	}
}

// checkOptions fails unless o holds what the readers promise.
func checkOptions(t *testing.T, o *api.DetectOptions, categoriesGiven bool) {
	t.Helper()
	if categoriesGiven && o.Categories == nil {
		t.Fatal("categories given, but Categories is nil (read as left out)")
	}
}

// checkListField fails unless every name read from a text field is trimmed,
// non-empty and free of the separator.
func checkListField(t *testing.T, names []string) {
	t.Helper()
	for _, c := range names {
		if c == "" || c != strings.TrimSpace(c) || strings.Contains(c, ",") {
			t.Fatalf("name %q from a text field is empty, untrimmed or holds a comma", c)
		}
	}
}

func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"image":"iVBORw0KGgo=","categories":["dog","red umbrella"],"score_threshold":0.3}`,
		`{"images":["AAAA","data:image/png;base64,AAAA"],"vocabulary":"kitchen"}`,
		`{"image":"AAAA","categories":[],"synonyms":{"dog":["puppy"]},"thresholds":{"dog":0.5},"negatives":["cat"]}`,
		`{"image":"AAAA","head":"text","runners_up":2,"labels_per_box":3,"nms_iou":0.5,"max_detections":7}`,
		`{"image":"data:text/plain,AAAA"}`, `{"image":"@@@"}`, `{"image":7}`, `{"image":"AAAA","categories":"dog"}`,
		`{"image":"AAAA","unknown<script>":1}`, `{"image":"AAAA"} {}`, `{"image":"AAAA","categories":null}`,
		`[[[[[[[[[[`, ``, `{"images":[]}`, `{"image":"AAAA","images":["AAAA"]}`, `{"thresholds":{"a":"x"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req api.DetectRequest
		err := DecodeJSON(bytes.NewReader(body), &req)
		if err != nil {
			checkError(t, err)
		}
		// The same body through the reader, as POST /v1/detect reads it.
		r := httptest.NewRequest(http.MethodPost, "/v1/detect", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		in, err2 := Reader{Limits: fuzzLimits}.Image(httptest.NewRecorder(), r, true)
		if err2 != nil {
			checkError(t, err2)
			return
		}
		if err != nil && int64(len(body)) <= fuzzLimits.MaxJSONImageBytes {
			t.Fatalf("DecodeJSON refused (%v) what the reader took", err)
		}
		if len(in.Images) == 0 || len(in.Images) > fuzzLimits.MaxBatch || in.Batch != (req.Images != nil) {
			t.Fatalf("read %d images (batch %v)", len(in.Images), in.Batch)
		}
		for _, im := range in.Images {
			if len(im) == 0 {
				t.Fatal("an empty image was taken")
			}
		}
		checkOptions(t, &in.Options, req.Categories != nil)
	})
}

func FuzzOptionsFromValues(f *testing.F) {
	for _, s := range []string{
		"categories=dog,red%20umbrella&categories=mug&score_threshold=0.3",
		"categories=", "categories=,%20,", "categories=a&categories=", "vocabulary=kitchen&head=image",
		"max_detections=10&runners_up=0&labels_per_box=2&nms_iou=1", "score_threshold=abc", "max_detections=1e3",
		"head=a&head=b", "unknown=1", "negatives=x,,y", "%zz=1", "categories=%ff%fe", "score_threshold=NaN",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, query string) {
		v, _ := url.ParseQuery(query) // as r.URL.Query(): what parses is kept
		o, err := OptionsFromValues(v, nil)
		if err != nil {
			checkError(t, err)
			return
		}
		_, given := v["categories"]
		checkOptions(t, o, given)
		checkListField(t, o.Categories)
		checkListField(t, o.Negatives)
		for key, set := range map[string]bool{"score_threshold": o.ScoreThreshold != nil, "nms_iou": o.NMSIoU != nil,
			"max_detections": o.MaxDetections != nil, "runners_up": o.RunnersUp != nil, "labels_per_box": o.LabelsPerBox != nil} {
			if _, ok := v[key]; ok != set {
				t.Fatalf("%s given %v, set %v", key, ok, set)
			}
		}
		if len(v["vocabulary"]) == 1 && o.Vocabulary != strings.TrimSpace(v["vocabulary"][0]) {
			t.Fatalf("vocabulary %q read as %q", v["vocabulary"][0], o.Vocabulary)
		}
	})
}

// multipartSeed is a multipart body with boundary "B".
func multipartSeed(parts ...string) []byte {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString("--B\r\n" + p + "\r\n")
	}
	b.WriteString("--B--\r\n")
	return []byte(b.String())
}

func FuzzMultipart(f *testing.F) {
	field := func(name, value string) string {
		return `Content-Disposition: form-data; name="` + name + `"` + "\r\n\r\n" + value
	}
	image := `Content-Disposition: form-data; name="image"; filename="a.png"` + "\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n"
	for _, b := range [][]byte{
		multipartSeed(image, field("categories", "dog, red umbrella"), field("score_threshold", "0.3")),
		multipartSeed(image, field("categories", "")),
		multipartSeed(image, field("options", `{"categories":[],"synonyms":{"dog":["puppy"]}}`), field("categories", "dog")),
		multipartSeed(image, field("options", `{"categories":`), field("head", "text")),
		multipartSeed(image, image),
		multipartSeed(field("categories", "dog")),
		multipartSeed(image, field("colour", "red")),
		multipartSeed(image, field("options", "{}"), field("options", "{}")),
		multipartSeed(image, field("max_detections", "x"), field("runners_up", "1"), field("runners_up", "2")),
		[]byte("--B\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nunterminated"),
		[]byte("not multipart at all"),
	} {
		f.Add(b, true)
		f.Add(b, false)
	}
	f.Fuzz(func(t *testing.T, body []byte, withOptions bool) {
		r := httptest.NewRequest(http.MethodPost, "/v1/detect", bytes.NewReader(body))
		r.Header.Set("Content-Type", "multipart/form-data; boundary=B")
		in, err := Reader{Limits: fuzzLimits}.Image(httptest.NewRecorder(), r, withOptions)
		if err != nil {
			checkError(t, err)
			return
		}
		if len(in.Images) != 1 || len(in.Images[0]) == 0 || in.Batch {
			t.Fatalf("read %d images (batch %v), want exactly one non-empty", len(in.Images), in.Batch)
		}
		if !withOptions && (in.Options.Categories != nil || in.Options.Vocabulary != "") {
			t.Fatalf("options %+v read where none are taken", in.Options)
		}
	})
}
