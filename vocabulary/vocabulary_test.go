package vocabulary

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vild/vild/detector"
)

var lim = Limits{MaxNames: 10, MaxNameLength: 16}

func TestNormalizeCanonical(t *testing.T) {
	got, err := Normalize(Spec{
		Categories: []string{" Mug ", "mug", "kettle"},
		Synonyms:   map[string][]string{"MUG": {"cup", "Cup"}},
		Negatives:  []string{"bowl", "BOWL"},
		Thresholds: map[string]float32{"KETTLE": 0.4},
	}, lim)
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{Categories: []string{"Mug", "kettle"}, Synonyms: map[string][]string{"Mug": {"cup"}},
		Negatives: []string{"bowl"}, Thresholds: map[string]float32{"kettle": 0.4}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if got.Digest() != want.Digest() || !strings.HasPrefix(got.Digest(), "sha256:") {
		t.Fatalf("digest %q", got.Digest())
	}
}

func TestNormalizeErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		spec Spec
		kind error
	}{
		{"no categories", Spec{}, ErrInvalidName},
		{"long name", Spec{Categories: []string{strings.Repeat("x", 17)}}, ErrInvalidName},
		{"control character", Spec{Categories: []string{"a\x00b"}}, ErrInvalidName},
		{"too many", Spec{Categories: strings.Split("a,b,c,d,e,f,g,h,i,j,k", ",")}, ErrTooManyNames},
		{"synonym of nothing", Spec{Categories: []string{"a"}, Synonyms: map[string][]string{"b": {"c"}}}, ErrInvalidSynonyms},
		{"synonym is a category", Spec{Categories: []string{"a", "b"}, Synonyms: map[string][]string{"a": {"B"}}}, ErrInvalidSynonyms},
		{"negative is a category", Spec{Categories: []string{"a"}, Negatives: []string{"A"}}, ErrInvalidNegatives},
		{"threshold above 1", Spec{Categories: []string{"a"}, Thresholds: map[string]float32{"a": 1.5}}, ErrInvalidThresholds},
		// Found by FuzzNormalize: which of the two won depended on map order,
		// so the digest of one spec could differ between two calls.
		{"two thresholds for one category", Spec{Categories: []string{"Red"}, Thresholds: map[string]float32{"Red": 0.1, "red": 0.9}}, ErrInvalidThresholds},
		{"template without {}", Spec{Categories: []string{"a"}, Templates: []string{"a photo"}}, ErrInvalidTemplates},
	} {
		_, err := Normalize(c.spec, lim)
		var ie *InvalidError
		if !errors.Is(err, c.kind) || !errors.As(err, &ie) || ie.Msg == "" {
			t.Errorf("%s: %v, want kind %v", c.name, err, c.kind)
		}
	}
}

// fixedEmbedder embeds each name as a one-hot of its length.
type fixedEmbedder struct{ calls int }

func (f *fixedEmbedder) Embed(ctx context.Context, names []string) ([][]float32, error) {
	f.calls++
	out := make([][]float32, len(names))
	for i, n := range names {
		out[i] = make([]float32, 32)
		out[i][len(n)%32] = 1
	}
	return out, nil
}

func TestBuildClassesAndCache(t *testing.T) {
	emb := &fixedEmbedder{}
	spec, _ := Normalize(Spec{Categories: []string{"mug", "kettle"}, Synonyms: map[string][]string{"mug": {"cup"}},
		Negatives: []string{"bowl"}, Thresholds: map[string]float32{"kettle": 0.4}}, lim)
	b := NewBuilder(emb, []string{"Kettle"}, 4)
	v, err := b.Build(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	want := []detector.Class{
		{Label: "mug", Text: "mug"}, {Label: "mug", Text: "cup"},
		{Label: "kettle", Text: "kettle", Base: true, Threshold: 0.4}, {Label: "bowl", Text: "bowl", Negative: true},
	}
	for i := range v.Classes {
		v.Classes[i].Embedding = nil
	}
	if !reflect.DeepEqual(v.Classes, want) || v.Digest != spec.Digest() {
		t.Fatalf("classes %+v digest %s", v.Classes, v.Digest)
	}
	if _, err := b.Build(context.Background(), spec); err != nil || emb.calls != 1 {
		t.Fatalf("second build: %v, %d embedder calls, want 1", err, emb.calls)
	}
	if _, err := Build(context.Background(), emb, nil, Spec{Categories: []string{"a"}, Templates: []string{"a {}"}}); !errors.Is(err, ErrTemplatesUnsupported) {
		t.Fatalf("templates on a plain embedder: %v", err)
	}
	if _, err := Build(context.Background(), emb, nil, Spec{}); !errors.Is(err, detector.ErrEmptyVocabulary) {
		t.Fatalf("empty spec: %v", err)
	}
}

func TestFileStoreConditionalWrites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Categories: []string{"mug"}}
	if _, _, err := s.Put(ctx, "k", spec, "e1", "*"); !errors.Is(err, ErrETagMismatch) {
		t.Fatalf("If-Match * on a missing entry: %v", err)
	}
	e, created, err := s.Put(ctx, "k", spec, "e1", "")
	if err != nil || !created || e.ETag != "e1" {
		t.Fatalf("create: %+v %v %v", e, created, err)
	}
	if _, _, err := s.Put(ctx, "k", spec, "e2", `"other"`); !errors.Is(err, ErrETagMismatch) {
		t.Fatalf("stale If-Match: %v", err)
	}
	if _, created, err := s.Put(ctx, "k", spec, "e2", `W/"e1", "x"`); err != nil || created {
		t.Fatalf("replace: %v %v", created, err)
	}
	if _, _, err := s.Put(ctx, "../k", spec, "e2", ""); !errors.Is(err, ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
	again, err := OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.Get(ctx, "k"); err != nil || got.ETag != "e2" {
		t.Fatalf("reopened: %+v %v", got, err)
	}
	if err := s.Delete(ctx, "k", "e1"); !errors.Is(err, ErrETagMismatch) {
		t.Fatalf("stale delete: %v", err)
	}
	if err := s.Delete(ctx, "k", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files left: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(dir, "k.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}
