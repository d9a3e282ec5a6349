package vocabulary

import (
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// normalizeMessages are every form an *InvalidError's message takes; N stands
// for a number (a limit). None holds input.
var normalizeMessages = regexp.MustCompile(`^(` + strings.Join([]string{
	`each (category|synonym|negative|exemplar label) must be N to N characters`,
	`a (category|synonym|negative|exemplar label) holds invalid UTF-N or control characters`,
	`at most N names \(categories, synonyms and negatives together\)`,
	`give at least one category`,
	`give at least one category \(a name, or a label with exemplars\)`,
	`each exemplars label appears once`,
	`each exemplar category has N to N exemplars`,
	`at most N exemplars in all`,
	`exemplar embeddings have one length, N to N values`,
	`exemplar embeddings must be finite and not all zero`,
	`every synonyms key must be one of the categories`,
	`a synonym is also a category, a negative or another category's synonym`,
	`a negative is also a category or a synonym`,
	`every thresholds key must be one of the categories`,
	`two thresholds keys name the same category`,
	`thresholds must be in \[N, N\]`,
	`at most N templates`,
	`each template holds "\{\}" exactly once and at most N characters`,
}, "|") + `)$`)

var numbers = regexp.MustCompile(`[0-9]+`)

// FuzzNormalize: any spec (read from JSON, as PUT /v1/vocabularies and the
// file store read it) under any small limits normalises without a panic,
// either to a canonical spec or to an *InvalidError with a fixed-form message.
// The canonical spec is a fixed point (Normalize(Normalize(x)) ==
// Normalize(x)), Normalize is deterministic, and the digest is the same
// after the spec's JSON round trip (the ETag of a reloaded file). Run it with
//
//	go test ./vocabulary -run '^$' -fuzz '^FuzzNormalize$' -fuzztime 60s
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		`{"categories":[" Mug ","mug","kettle"],"synonyms":{"MUG":["cup","Cup"]},"negatives":["bowl","BOWL"],"thresholds":{"KETTLE":0.4}}`,
		`{"categories":["a"],"templates":["a photo of a {}.","{} in the wild"]}`,
		`{"categories":["Red","red"],"thresholds":{"Red":0.1,"red":0.9}}`,
		`{"categories":["a","b"],"synonyms":{"a":["b"]}}`,
		`{"categories":["a"],"negatives":["A"]}`,
		`{"categories":["K"],"synonyms":{"\u212a":["k2"]}}`,
		`{"categories":["a\u0000b"]}`, `{"categories":["  "]}`, `{"categories":[]}`, `{}`,
		`{"categories":["x"],"thresholds":{"x":1.5}}`, `{"categories":["x"],"templates":["{}{}"]}`,
		`{"categories":["İ","i̇"]}`, `{"categories":["ß","SS","ss"]}`,
		`{"categories":["mug"],"exemplars":[{"label":"MUG","embeddings":[[0.3,0.4]]},{"label":"dango","embeddings":[[1,2],[0,1e-30]]}]}`,
		`{"exemplars":[{"label":"a","embeddings":[[0,0]]},{"label":"A","embeddings":[[1]]}]}`,
	} {
		f.Add([]byte(s), uint8(10), uint8(16))
	}
	f.Fuzz(func(t *testing.T, data []byte, maxNames, maxLength uint8) {
		var spec Spec
		if json.Unmarshal(data, &spec) != nil {
			return
		}
		lim := Limits{MaxNames: int(maxNames), MaxNameLength: int(maxLength)}
		out, err := Normalize(spec, lim)
		if err != nil {
			var ie *InvalidError
			if !errors.As(err, &ie) || ie.Msg == "" || ie.Kind == nil || !errors.Is(err, ie.Kind) {
				t.Fatalf("error %v (%T) is not an *InvalidError with a kind and a message", err, err)
			}
			if m := numbers.ReplaceAllString(ie.Msg, "N"); !normalizeMessages.MatchString(m) {
				t.Fatalf("message %q is not one of the fixed forms (it may echo input)", ie.Msg)
			}
			return
		}
		again, err := Normalize(spec, lim)
		if err != nil || !reflect.DeepEqual(again, out) || again.Digest() != out.Digest() {
			t.Fatalf("Normalize is not deterministic: %+v then %+v (%v)", out, again, err)
		}
		fixed, err := Normalize(out, lim)
		if err != nil {
			t.Fatalf("the canonical spec %+v does not normalise: %v", out, err)
		}
		if !reflect.DeepEqual(fixed, out) || fixed.Digest() != out.Digest() {
			t.Fatalf("not a fixed point:\n%+v\n%+v", out, fixed)
		}
		b, err := json.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		var back Spec
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if back.Digest() != out.Digest() {
			t.Fatalf("digest changed over JSON: %s", b)
		}
		// What the canonical spec holds.
		names := map[string]bool{}
		count := func(s string) {
			if s != strings.TrimSpace(s) || s == "" {
				t.Fatalf("name %q not trimmed", s)
			}
			if names[NormName(s)] {
				t.Fatalf("name %q twice", s)
			}
			names[NormName(s)] = true
		}
		cats := map[string]bool{}
		for _, c := range out.Categories {
			count(c)
			cats[c] = true
		}
		for k, ss := range out.Synonyms {
			if !cats[k] {
				t.Fatalf("synonyms key %q is not a category's spelling", k)
			}
			for _, s := range ss {
				count(s)
			}
		}
		for _, n := range out.Negatives {
			count(n)
		}
		for k := range out.Thresholds {
			if !cats[k] {
				t.Fatalf("thresholds key %q is not a category's spelling", k)
			}
		}
		// Something to detect: named categories, or categories given by
		// exemplars only.
		if len(out.Categories)+len(out.Exemplars) == 0 || len(names) > lim.MaxNames {
			t.Fatalf("%d categories, %d exemplar categories, %d names (limit %d)",
				len(out.Categories), len(out.Exemplars), len(names), lim.MaxNames)
		}
	})
}
