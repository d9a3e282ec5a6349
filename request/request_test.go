package request

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/vild/vild/api"
)

// Categories given as an empty list (non-nil) and categories left out (nil)
// stay apart through every reader: the server answers the first 422 and the
// second with the model's own vocabulary.
func TestCategoriesGivenOrLeftOut(t *testing.T) {
	for _, c := range []struct {
		body  string
		given bool
		n     int
	}{
		{`{}`, false, 0},
		{`{"categories":null}`, false, 0},
		{`{"categories":[]}`, true, 0},
		{`{"categories":["a"]}`, true, 1},
	} {
		var req api.DetectRequest
		if err := DecodeJSON(strings.NewReader(c.body), &req); err != nil {
			t.Fatal(err)
		}
		if (req.Categories != nil) != c.given || len(req.Categories) != c.n {
			t.Errorf("JSON %s: categories %#v", c.body, req.Categories)
		}
	}
	for _, c := range []struct {
		query string
		base  []string // nil: no options field
		given bool
		n     int
	}{
		{"", nil, false, 0},
		{"head=text", nil, false, 0},
		{"categories=", nil, true, 0},
		{"categories=,%20,", nil, true, 0},
		{"categories=&categories=", nil, true, 0},
		{"categories=a,,b", nil, true, 2},
		{"categories=", []string{}, true, 0},
		{"head=text", []string{}, true, 0},
		{"categories=b", []string{"a"}, true, 2},
	} {
		v, err := url.ParseQuery(c.query)
		if err != nil {
			t.Fatal(err)
		}
		var base *api.DetectOptions
		if c.base != nil {
			base = &api.DetectOptions{Categories: c.base}
		}
		o, err := OptionsFromValues(v, base)
		if err != nil {
			t.Fatalf("%q: %v", c.query, err)
		}
		if (o.Categories != nil) != c.given || len(o.Categories) != c.n {
			t.Errorf("query %q over %#v: categories %#v", c.query, c.base, o.Categories)
		}
	}
}

// A wrong type is named in the client's terms: the JSON path without Go's
// embedded struct names, and the JSON type wanted.
func TestWrongTypeMessage(t *testing.T) {
	for body, want := range map[string]string{
		`{"categories":"red"}`:         `field "categories" has the wrong type (want array)`,
		`{"thresholds":{"a":"x"}}`:     `field "thresholds" has the wrong type (want number)`,
		`{"synonyms":{"a":[1]}}`:       `field "synonyms" has the wrong type (want string)`,
		`{"max_detections":"x"}`:       `field "max_detections" has the wrong type (want integer)`,
		`{"max_detections":1.5}`:       `field "max_detections" has the wrong type (want integer)`,
		`{"vocabulary":["a"]}`:         `field "vocabulary" has the wrong type (want string)`,
		`{"images":{"a":"b"}}`:         `field "images" has the wrong type (want array)`,
		`{"negatives":[["nested"]]}`:   `field "negatives" has the wrong type (want string)`,
		`{"score_threshold":"high"}`:   `field "score_threshold" has the wrong type (want number)`,
		`{"synonyms":["a"]}`:           `field "synonyms" has the wrong type (want object)`,
		`{"head":{"DetectOptions":1}}`: `field "head" has the wrong type (want string)`,
		`000`:                          `the body has the wrong type (want object)`, // found by FuzzDecodeJSON
		`["a"]`:                        `the body has the wrong type (want object)`,
	} {
		var req api.DetectRequest
		err := DecodeJSON(strings.NewReader(body), &req)
		var e *api.Error
		if !errors.As(err, &e) || e.Msg != "invalid JSON body: "+want {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
}
