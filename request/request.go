// Package request reads the bodies of vild's API requests: JSON (strict: one
// value, no unknown fields), streamed multipart with few small parts, or a raw
// image with options in the query string, each within byte limits checked
// before and while reading. Its errors are *api.Error, answered as problems.
package request

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/vild/vild/api"
)

// Limits bound what a Reader reads.
type Limits struct {
	MaxBodyBytes       int64 // raw and multipart bodies
	MaxJSONImageBytes  int64 // JSON bodies carrying base64 images
	MaxJSONBytes       int64 // other JSON bodies, and each multipart text field
	MaxParts           int   // parts of a multipart body
	MaxPartHeaderBytes int   // header bytes of one part
	MaxBatch           int   // images of one JSON request
}

// Reader reads request bodies within its limits.
type Reader struct{ Limits Limits }

// Input is what an image-carrying request was read into.
type Input struct {
	Images  [][]byte
	Options api.DetectOptions
	Batch   bool // a JSON batch (images), answered with one result each
}

// capBody rejects by Content-Length before reading, then caps the reader.
func capBody(w http.ResponseWriter, r *http.Request, limit int64) error {
	if r.ContentLength > limit {
		return &http.MaxBytesError{Limit: limit}
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	return nil
}

// DecodeJSON decodes exactly one JSON value, rejecting unknown fields and trailing data.
func DecodeJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return api.BadRequest("invalid-json", "the request body is empty", err)
		}
		return api.BadRequest("invalid-json", "invalid JSON body: "+jsonMessage(err), err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return api.BadRequest("invalid-json", "invalid JSON body: trailing data after the JSON value", err)
	}
	return nil
}

// jsonMessage says what was wrong without echoing input values.
func jsonMessage(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var ie *api.ImageFieldError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		if p := jsonPath(te.Field); p != "" {
			return fmt.Sprintf("field %q has the wrong type (want %s)", p, jsonType(te.Type))
		}
		return fmt.Sprintf("the body has the wrong type (want %s)", jsonType(te.Type))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field (the API docs list the accepted fields)" // the name is input: not echoed
	case strings.Contains(err.Error(), "exceeded max depth"):
		return "nested too deeply"
	case errors.As(err, &ie):
		return ie.Msg
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	}
	return "malformed"
}

// jsonPath is a field path as the client wrote it: the Go names of embedded
// structs (DetectOptions.thresholds) left out.
func jsonPath(field string) string {
	var out []string
	for _, p := range strings.Split(field, ".") {
		if p != "" && !unicode.IsUpper([]rune(p)[0]) {
			out = append(out, p)
		}
	}
	return strings.Join(out, ".")
}

// jsonType names the JSON type a Go type is read from.
func jsonType(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Pointer:
		return jsonType(t.Elem())
	}
	return "object"
}

// mediaType returns the request's media type, lower case, without parameters.
func mediaType(r *http.Request) (string, map[string]string) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return "", nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return "invalid", nil
	}
	return mt, params
}

// Image reads an image-carrying body: JSON with base64, multipart
// (streamed, few parts, exactly one image) or a raw image body with options in
// the query string. withOptions allows detection options (POST /v1/detect).
func (rd Reader) Image(w http.ResponseWriter, r *http.Request, withOptions bool) (*Input, error) {
	mt, _ := mediaType(r)
	switch {
	case mt == "application/json":
		if err := capBody(w, r, rd.Limits.MaxJSONImageBytes); err != nil {
			return nil, err
		}
		if withOptions {
			var req api.DetectRequest
			if err := DecodeJSON(r.Body, &req); err != nil {
				return nil, err
			}
			in := &Input{Options: req.DetectOptions}
			switch {
			case req.Image != nil && req.Images != nil:
				return nil, api.BadRequest("invalid-request", "give image or images, not both", nil)
			case req.Image != nil:
				in.Images = [][]byte{req.Image}
			case req.Images != nil:
				if len(req.Images) == 0 || len(req.Images) > rd.Limits.MaxBatch {
					return nil, api.BadRequest("invalid-request", fmt.Sprintf("images must hold 1 to %d images", rd.Limits.MaxBatch), nil)
				}
				in.Batch = true
				for _, im := range req.Images {
					in.Images = append(in.Images, im)
				}
			}
			return in.check()
		}
		var req api.ImageRequest
		if err := DecodeJSON(r.Body, &req); err != nil {
			return nil, err
		}
		return (&Input{Images: [][]byte{req.Image}}).check()
	case mt == "multipart/form-data":
		if err := capBody(w, r, rd.Limits.MaxBodyBytes); err != nil {
			return nil, err
		}
		return rd.readMultipart(r, withOptions)
	case strings.HasPrefix(mt, "image/") || mt == "application/octet-stream":
		if err := capBody(w, r, rd.Limits.MaxBodyBytes); err != nil {
			return nil, err
		}
		in := &Input{}
		if withOptions {
			opts, err := OptionsFromValues(r.URL.Query(), nil)
			if err != nil {
				return nil, err
			}
			in.Options = *opts
		} else if len(r.URL.Query()) > 0 {
			return nil, api.BadRequest("invalid-request", "this route takes no query parameters", nil)
		}
		data, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		in.Images = [][]byte{data}
		return in.check()
	case mt == "":
		return nil, api.Errorf(http.StatusUnsupportedMediaType, "unsupported-content-type",
			"set Content-Type: application/json, multipart/form-data or the image's type")
	default:
		return nil, api.Errorf(http.StatusUnsupportedMediaType, "unsupported-content-type",
			"unsupported Content-Type: use application/json, multipart/form-data or the image's type")
	}
}

func (in *Input) check() (*Input, error) {
	if len(in.Images) == 0 {
		return nil, api.BadRequest("missing-image", "the request carries no image", nil)
	}
	for _, im := range in.Images {
		if len(im) == 0 {
			return nil, api.BadRequest("missing-image", "an image is empty", nil)
		}
	}
	return in, nil
}

// readMultipart streams the parts: no temporary files, at most MaxParts parts,
// exactly one part named "image", small text fields.
func (rd Reader) readMultipart(r *http.Request, withOptions bool) (*Input, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, api.BadRequest("invalid-multipart", "invalid multipart body", err)
	}
	in := &Input{}
	fields := url.Values{}
	var optionsJSON []byte
	for n := 0; ; n++ {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, err
			}
			return nil, api.BadRequest("invalid-multipart", "invalid multipart body", err)
		}
		if n >= rd.Limits.MaxParts {
			part.Close()
			return nil, api.BadRequest("too-many-parts", fmt.Sprintf("a multipart body may have at most %d parts", rd.Limits.MaxParts), nil)
		}
		if hb := headerBytes(part.Header); hb > rd.Limits.MaxPartHeaderBytes {
			part.Close()
			return nil, api.BadRequest("invalid-multipart", fmt.Sprintf("a part's headers exceed %d bytes", rd.Limits.MaxPartHeaderBytes), nil)
		}
		name := part.FormName()
		switch {
		case name == "image":
			if len(in.Images) > 0 {
				part.Close()
				return nil, api.BadRequest("invalid-multipart", "send exactly one part named image", nil)
			}
			data, err := io.ReadAll(part)
			if err != nil {
				return nil, multipartErr(err)
			}
			in.Images = append(in.Images, data)
		case withOptions && (name == "options" || slices.Contains(optionFields, name)):
			data, err := io.ReadAll(io.LimitReader(part, rd.Limits.MaxJSONBytes+1))
			if err != nil {
				return nil, multipartErr(err)
			}
			if int64(len(data)) > rd.Limits.MaxJSONBytes {
				return nil, api.BadRequest("invalid-multipart", fmt.Sprintf("field %s exceeds %d bytes", name, rd.Limits.MaxJSONBytes), nil)
			}
			if name == "options" {
				if optionsJSON != nil {
					return nil, api.BadRequest("invalid-multipart", "send at most one options field", nil)
				}
				optionsJSON = data
			} else {
				fields.Add(name, string(data))
			}
		default:
			part.Close()
			want := "image"
			if withOptions {
				want = "image, " + strings.Join(optionFields, ", ") + " or options"
			}
			return nil, api.BadRequest("invalid-multipart", "unknown multipart field (want "+want+")", nil)
		}
		part.Close()
	}
	if withOptions {
		var base *api.DetectOptions
		if optionsJSON != nil {
			base = &api.DetectOptions{}
			if err := DecodeJSON(bytes.NewReader(optionsJSON), base); err != nil {
				return nil, err
			}
		}
		opts, err := OptionsFromValues(fields, base)
		if err != nil {
			return nil, err
		}
		in.Options = *opts
	}
	return in.check()
}

func multipartErr(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return api.BadRequest("invalid-multipart", "invalid multipart body", err)
}

func headerBytes(h map[string][]string) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// optionFields are the options a query string or multipart form may carry.
var optionFields = []string{"categories", "vocabulary", "negatives", "score_threshold", "max_detections",
	"nms_iou", "head", "runners_up", "labels_per_box", "masks", "scores"}

// OptionsFromValues reads options from query parameters or multipart text
// fields; list fields are comma-separated or repeated. base holds options
// already read from an "options" JSON field. A categories field that is
// present but empty after splitting gives an empty, non-nil Categories.
func OptionsFromValues(v url.Values, base *api.DetectOptions) (*api.DetectOptions, error) {
	o := &api.DetectOptions{}
	if base != nil {
		o = base
	}
	for k := range v {
		if !slices.Contains(optionFields, k) {
			return nil, api.BadRequest("invalid-request", "unknown parameter (want "+
				strings.Join(optionFields[:len(optionFields)-1], ", ")+" or "+optionFields[len(optionFields)-1]+")", nil)
		}
	}
	list := func(key string) []string {
		var out []string
		for _, s := range v[key] {
			for _, p := range strings.Split(s, ",") {
				if p = strings.TrimSpace(p); p != "" {
					out = append(out, p)
				}
			}
		}
		return out
	}
	single := func(key string) (string, bool, error) {
		vs := v[key]
		if len(vs) == 0 {
			return "", false, nil
		}
		if len(vs) > 1 {
			return "", false, api.BadRequest("invalid-request", key+" given more than once", nil)
		}
		return strings.TrimSpace(vs[0]), true, nil
	}
	if _, given := v["categories"]; given {
		// Present, even empty after splitting, is not absent: an empty list is
		// answered empty-vocabulary, no categories at all the model's own.
		o.Categories = append(o.Categories, list("categories")...)
		if o.Categories == nil {
			o.Categories = []string{}
		}
	}
	if n := list("negatives"); n != nil {
		o.Negatives = append(o.Negatives, n...)
	}
	if s, ok, err := single("vocabulary"); err != nil {
		return nil, err
	} else if ok {
		o.Vocabulary = s
	}
	if s, ok, err := single("head"); err != nil {
		return nil, err
	} else if ok {
		o.Head = s
	}
	if s, ok, err := single("masks"); err != nil {
		return nil, err
	} else if ok {
		o.Masks = s
	}
	if s, ok, err := single("scores"); err != nil {
		return nil, err
	} else if ok {
		o.Scores = s
	}
	for _, f := range []struct {
		key string
		dst **float32
	}{{"score_threshold", &o.ScoreThreshold}, {"nms_iou", &o.NMSIoU}} {
		s, ok, err := single(f.key)
		if err != nil {
			return nil, err
		}
		if ok {
			x, err := strconv.ParseFloat(s, 32)
			if err != nil {
				return nil, api.BadRequest("invalid-request", f.key+" must be a number", err)
			}
			x32 := float32(x)
			*f.dst = &x32
		}
	}
	for _, f := range []struct {
		key string
		dst **int
	}{{"max_detections", &o.MaxDetections}, {"runners_up", &o.RunnersUp}, {"labels_per_box", &o.LabelsPerBox}} {
		s, ok, err := single(f.key)
		if err != nil {
			return nil, err
		}
		if ok {
			x, err := strconv.Atoi(s)
			if err != nil {
				return nil, api.BadRequest("invalid-request", f.key+" must be an integer", err)
			}
			*f.dst = &x
		}
	}
	return o, nil
}

// JSONImages reads a JSON body that may carry base64 images strictly, within
// MaxJSONImageBytes.
func (rd Reader) JSONImages(w http.ResponseWriter, r *http.Request, v any) error {
	if mt, _ := mediaType(r); mt != "application/json" {
		return api.Errorf(http.StatusUnsupportedMediaType, "unsupported-content-type", "send Content-Type: application/json")
	}
	if err := capBody(w, r, rd.Limits.MaxJSONImageBytes); err != nil {
		return err
	}
	return DecodeJSON(r.Body, v)
}

// JSON reads a small JSON body (no images) strictly.
func (rd Reader) JSON(w http.ResponseWriter, r *http.Request, v any) error {
	if mt, _ := mediaType(r); mt != "application/json" {
		return api.Errorf(http.StatusUnsupportedMediaType, "unsupported-content-type", "send Content-Type: application/json")
	}
	if err := capBody(w, r, rd.Limits.MaxJSONBytes); err != nil {
		return err
	}
	return DecodeJSON(r.Body, v)
}
