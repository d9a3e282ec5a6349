package request

import (
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
