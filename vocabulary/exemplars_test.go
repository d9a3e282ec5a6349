package vocabulary

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/vild/vild/detector"
)

// dimEmbedder is fixedEmbedder that reports its dimension, as textbank.Bank does.
type dimEmbedder struct{ fixedEmbedder }

func (dimEmbedder) Dim() int { return 32 }

func vec(dim int, hot ...int) []float32 {
	v := make([]float32, dim)
	for _, h := range hot {
		v[h] = 2 // not unit: Normalize rescales
	}
	return v
}

func TestNormalizeExemplars(t *testing.T) {
	got, err := Normalize(Spec{
		Categories: []string{"Mug"},
		Exemplars: []ExemplarCategory{
			{Label: "mug", Embeddings: [][]float32{vec(32, 1)}},        // a named category gains exemplars
			{Label: " dango ", Embeddings: [][]float32{vec(32, 2, 3)}}, // exemplars alone
		},
		Thresholds: map[string]float32{"DANGO": 0.3},
		Synonyms:   map[string][]string{"dango": {"skewer"}},
	}, lim)
	if err != nil {
		t.Fatal(err)
	}
	r := float32(1 / math.Sqrt2)
	want := []ExemplarCategory{{Label: "Mug", Embeddings: [][]float32{vec(32)}}, {Label: "dango", Embeddings: [][]float32{vec(32)}}}
	want[0].Embeddings[0][1] = 1
	want[1].Embeddings[0][2], want[1].Embeddings[0][3] = r, r
	if !reflect.DeepEqual(got.Exemplars, want) || got.Thresholds["dango"] != 0.3 || got.Synonyms["dango"][0] != "skewer" {
		t.Fatalf("got %+v", got)
	}
	// The digest covers the embeddings and survives a JSON round trip (a store).
	raw, _ := json.Marshal(got)
	var back Spec
	if err := json.Unmarshal(raw, &back); err != nil || back.Digest() != got.Digest() {
		t.Fatalf("round trip: %v, digest %s vs %s", err, back.Digest(), got.Digest())
	}
	other := back
	other.Exemplars = []ExemplarCategory{want[0], {Label: "dango", Embeddings: [][]float32{vec(32)}}}
	other.Exemplars[1].Embeddings[0][4] = 1
	if other.Digest() == got.Digest() {
		t.Error("another exemplar embedding, same digest")
	}
	// exemplars alone make a vocabulary
	if _, err := Normalize(Spec{Exemplars: []ExemplarCategory{{Label: "x", Embeddings: [][]float32{vec(4, 0)}}}}, lim); err != nil {
		t.Errorf("exemplars alone: %v", err)
	}
}

func TestNormalizeExemplarErrors(t *testing.T) {
	one := [][]float32{vec(4, 0)}
	many := make([][]float32, MaxExemplarsPerCategory+1)
	for i := range many {
		many[i] = vec(4, 0)
	}
	nan := vec(4, 0)
	nan[1] = float32(math.NaN())
	var tooMany []ExemplarCategory
	for _, l := range []string{"a", "b", "c", "d", "e"} {
		tooMany = append(tooMany, ExemplarCategory{Label: l, Embeddings: many[:MaxExemplars/4]})
	}
	for _, c := range []struct {
		name string
		ex   []ExemplarCategory
		kind error
	}{
		{"empty label", []ExemplarCategory{{Label: " ", Embeddings: one}}, ErrInvalidName},
		{"label twice", []ExemplarCategory{{Label: "a", Embeddings: one}, {Label: "A", Embeddings: one}}, ErrInvalidExemplars},
		{"no exemplars", []ExemplarCategory{{Label: "a"}}, ErrInvalidExemplars},
		{"too many for a category", []ExemplarCategory{{Label: "a", Embeddings: many}}, ErrInvalidExemplars},
		{"too many in all", tooMany, ErrInvalidExemplars},
		{"lengths differ", []ExemplarCategory{{Label: "a", Embeddings: [][]float32{vec(4, 0), vec(5, 0)}}}, ErrInvalidExemplars},
		{"empty embedding", []ExemplarCategory{{Label: "a", Embeddings: [][]float32{{}}}}, ErrInvalidExemplars},
		{"too long", []ExemplarCategory{{Label: "a", Embeddings: [][]float32{vec(MaxEmbeddingDim+1, 0)}}}, ErrInvalidExemplars},
		{"zero", []ExemplarCategory{{Label: "a", Embeddings: [][]float32{vec(4)}}}, ErrInvalidExemplars},
		{"not finite", []ExemplarCategory{{Label: "a", Embeddings: [][]float32{nan}}}, ErrInvalidExemplars},
	} {
		_, err := Normalize(Spec{Categories: []string{"z"}, Exemplars: c.ex}, lim)
		var ie *InvalidError
		if !errors.Is(err, c.kind) || !errors.As(err, &ie) || ie.Msg == "" {
			t.Errorf("%s: %v, want kind %v", c.name, err, c.kind)
		}
	}
	// An exemplar-only label is a name: it counts against MaxNames.
	spec := Spec{Categories: []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"},
		Exemplars: []ExemplarCategory{{Label: "k", Embeddings: one}}}
	if _, err := Normalize(spec, lim); !errors.Is(err, ErrTooManyNames) {
		t.Errorf("eleventh name as an exemplar label: %v", err)
	}
	spec.Exemplars[0].Label = "j" // a named category's exemplars add no name
	if _, err := Normalize(spec, lim); err != nil {
		t.Errorf("exemplars of a named category: %v", err)
	}
	if _, err := Normalize(Spec{Negatives: []string{"n"}, Exemplars: []ExemplarCategory{{Label: "N", Embeddings: one}}}, lim); !errors.Is(err, ErrInvalidNegatives) {
		t.Errorf("a negative named like an exemplar label: %v", err)
	}
}

func TestBuildExemplarClasses(t *testing.T) {
	emb := &dimEmbedder{}
	a, b := vec(32, 5), vec(32, 6)
	spec, err := Normalize(Spec{Categories: []string{"mug", "kettle"},
		Exemplars: []ExemplarCategory{{Label: "kettle", Embeddings: [][]float32{a}}, {Label: "dango", Embeddings: [][]float32{a, b}}},
		Synonyms:  map[string][]string{"dango": {"skewer"}}, Negatives: []string{"bowl"},
		Thresholds: map[string]float32{"dango": 0.2}}, lim)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Build(context.Background(), emb, BaseNames([]string{"kettle", "dango"}), spec)
	if err != nil {
		t.Fatal(err)
	}
	r := float32(1 / math.Sqrt2)
	mean := vec(32)
	mean[5], mean[6] = r, r
	want := []detector.Class{
		{Label: "mug", Text: "mug"}, {Label: "kettle", Text: "kettle", Base: true},
		{Label: "dango", Text: "skewer", Base: true, Threshold: 0.2}, // a name under a base label
		{Label: "bowl", Text: "bowl", Negative: true},
		{Label: "dango", Embedding: mean, Threshold: 0.2}, // the unit mean of its exemplars; never base
	}
	// kettle's name class blends its text embedding (one-hot at 6, its length) with its exemplar (at 5)
	blended := vec(32)
	blended[5], blended[6] = r, r
	if !reflect.DeepEqual(v.Classes[1].Embedding, blended) {
		t.Errorf("kettle (name + exemplar) embedding %v", v.Classes[1].Embedding)
	}
	for i := range 4 {
		if len(v.Classes[i].Embedding) != 32 {
			t.Fatalf("class %d: text embedding of %d values", i, len(v.Classes[i].Embedding))
		}
		v.Classes[i].Embedding = nil
	}
	if !reflect.DeepEqual(v.Classes, want) || v.Digest != spec.Digest() {
		for i := range want {
			if i < len(v.Classes) && !reflect.DeepEqual(v.Classes[i], want[i]) {
				t.Errorf("class %d: %+v, want %+v", i, v.Classes[i], want[i])
			}
		}
		t.Fatalf("%d classes, digest %s vs %s", len(v.Classes), v.Digest, spec.Digest())
	}
	// Exemplars alone need no text encoder call; another length than the model's is refused.
	emb.calls = 0
	only, _ := Normalize(Spec{Exemplars: []ExemplarCategory{{Label: "x", Embeddings: [][]float32{a}}}}, lim)
	if v, err := Build(context.Background(), emb, nil, only); err != nil || len(v.Classes) != 1 || emb.calls != 0 {
		t.Fatalf("exemplars alone: %+v, %v, %d embedder calls", v, err, emb.calls)
	}
	short, _ := Normalize(Spec{Exemplars: []ExemplarCategory{{Label: "x", Embeddings: [][]float32{vec(8, 1)}}}}, lim)
	if _, err := Build(context.Background(), emb, nil, short); !errors.Is(err, ErrInvalidExemplars) {
		t.Fatalf("8-value embeddings for a 32-dimension model: %v", err)
	}
}
