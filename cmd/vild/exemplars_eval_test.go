package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/models"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/pipeline"
	"github.com/vild/vild/vocabulary"
)

func TestParseExemplarsEvalConfig(t *testing.T) {
	env := func(string) string { return "" }
	c, err := parseExemplarsEvalConfig([]string{"--annotations", "a.json", "--images", "im", "--pool-annotations", "p.json",
		"--pool-images", "pim", "--shots", "5,1", "--seed", "3"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Shots, []int{1, 5}) || c.Seed != 3 || c.MinSide != 16 || c.LabelsPerBox != 20 || c.ExemplarViews != "encoder" {
		t.Errorf("config %+v", c)
	}
	for _, args := range [][]string{
		{"--annotations", "a.json", "--images", "im"}, // no pool
		{"--annotations", "a", "--images", "i", "--pool-annotations", "p", "--pool-images", "q", "--shots", "0"},
		{"--annotations", "a", "--images", "i", "--pool-annotations", "p", "--pool-images", "q", "--shots", "9"},
		{"--annotations", "a", "--images", "i", "--pool-annotations", "p", "--pool-images", "q", "--min-side", "0"},
		{"--annotations", "a", "--images", "i", "--pool-annotations", "p", "--pool-images", "q", "--exemplar-views", "regions"},
	} {
		if _, err := parseExemplarsEvalConfig(args, env, io.Discard); err == nil || !strings.Contains(err.Error(), "exemplars-eval") {
			t.Errorf("%v: err = %v", args, err)
		}
	}
}

// lengthEmbedder embeds a name as a one-hot of its length and reports its dimension.
type lengthEmbedder struct{}

func (lengthEmbedder) Dim() int { return 8 }
func (lengthEmbedder) Embed(_ context.Context, names []string) ([][]float32, error) {
	out := make([][]float32, len(names))
	for i, n := range names {
		out[i] = make([]float32, 8)
		out[i][len(n)%8] = 1
	}
	return out, nil
}

func TestExemplarVariants(t *testing.T) {
	hot := func(i int) []float32 { v := make([]float32, 8); v[i] = 1; return v }
	embs := map[string][][]float32{"dango": {hot(1), hot(2)}, "yak": {}}
	raw := map[string][][]float32{"dango": {hot(3), hot(4)}, "yak": {}}
	rows, err := exemplarVariants(context.Background(), []int{1, 2}, []string{"cat", "dango", "yak"}, []string{"cat"},
		[]string{"dango", "yak"}, embs, raw, lengthEmbedder{})
	if err != nil {
		t.Fatal(err)
	}
	var methods []string
	for _, r := range rows {
		methods = append(methods, r.method+"/"+string(r.head))
	}
	want := []string{"names only/ensemble", "1 exemplar(s), no name/ensemble", "2 exemplar(s), no name/ensemble",
		"name + 2 exemplar(s)/ensemble", "name + 2 exemplar(s) as two classes of one label/ensemble",
		"2 exemplar(s), without the modality-gap shift/ensemble", "2 exemplar(s), weighted as base (text head λ)/ensemble", "2 exemplar(s), ViLD-image head alone/image",
		"2 exemplar(s), ViLD-text head alone/text", "names only, ViLD-image head alone/image"}
	if !reflect.DeepEqual(methods, want) {
		t.Fatalf("rows %q", methods)
	}
	classes := func(v *detector.Vocabulary) (out []string) {
		for _, c := range v.Classes {
			kind := "name"
			if c.Text == "" {
				kind = "exemplars"
			}
			if c.Base {
				kind += ",base"
			}
			out = append(out, c.Label+":"+kind)
		}
		return out
	}
	// 1 shot: dango by its first exemplar alone, yak (no pool objects) by name.
	if got := classes(rows[1].vocab); !reflect.DeepEqual(got, []string{"cat:name,base", "yak:name", "dango:exemplars"}) {
		t.Errorf("1-shot classes %v", got)
	}
	if e := rows[1].vocab.Classes[2].Embedding; e[1] != 1 || e[2] != 0 {
		t.Errorf("1-shot dango embedding %v, want its first exemplar", e)
	}
	if e := rows[2].vocab.Classes[2].Embedding; e[1] < 0.7 || e[2] < 0.7 {
		t.Errorf("2-shot dango embedding %v, want the mean of both", e)
	}
	// name + exemplars: one class per name, dango's blended with its exemplars
	if got := classes(rows[3].vocab); !reflect.DeepEqual(got, []string{"cat:name,base", "dango:name", "yak:name"}) ||
		rows[3].vocab.Classes[1].Embedding[1] == 0 {
		t.Errorf("name + exemplars classes %v, dango %v", got, rows[3].vocab.Classes[1].Embedding)
	}
	if got := classes(rows[4].vocab); !reflect.DeepEqual(got, []string{"cat:name,base", "dango:name", "yak:name", "dango:exemplars"}) {
		t.Errorf("two-class classes %v", got)
	}
	if got := classes(rows[6].vocab); !reflect.DeepEqual(got, []string{"cat:name,base", "yak:name", "dango:exemplars,base"}) {
		t.Errorf("weighted-as-base classes %v", got)
	}
	if e := rows[5].vocab.Classes[2].Embedding; e[3] < 0.7 || e[4] < 0.7 {
		t.Errorf("unshifted dango embedding %v, want the raw exemplars' mean", e)
	}
}

// The embedded default bundle embeds exemplars end to end: a box of a golden
// scene, given as the only exemplar of a label, is found again in that scene
// under that label, among named distractors. The fixture bundle has no image
// encoder and says so.
func TestDefaultModelFindsItsExemplar(t *testing.T) {
	lib := ort.DefaultLibraryPath()
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("ONNX Runtime library not at %s", lib)
	}
	ctx := context.Background()
	tiny, err := loadModel(ctx, modelConfig{ModelDir: filepath.Join("..", "..", "testdata", "tinybundle"), ORTLib: lib, DataDir: t.TempDir()})
	if errors.Is(err, ort.ErrDisabled) {
		t.Skip("built without cgo")
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(tiny.CropViews.Scales) != 0 {
		t.Errorf("the fixture bundle has no teacher's crops, but the model has views %+v", tiny.CropViews)
	}
	if tiny.Exemplars != nil || tiny.Info.Exemplars {
		t.Error("the fixture bundle has no image encoder, but the model says it takes exemplars")
	}
	if _, ok := tiny.Embedder.(vocabulary.ExemplarEmbedder); ok {
		t.Error("the fixture's embedder embeds exemplars")
	}
	tiny.Close()
	if !models.Present() {
		t.Skip("no default bundle")
	}
	m, err := loadModel(ctx, modelConfig{ORTLib: lib, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Exemplars == nil || !m.Info.Exemplars {
		t.Fatal("the default bundle's image encoder was not loaded")
	}
	def, err := models.Default()
	if err != nil {
		t.Fatal(err)
	}
	if want := pipeline.CropViews(def.Manifest); len(want.Scales) == 0 || !reflect.DeepEqual(m.CropViews, want) {
		t.Errorf("the model's crop views %+v, want the default bundle's %+v", m.CropViews, want)
	}
	raw, err := os.ReadFile(filepath.Join("..", "..", "models", "default", "golden", "exact", "input.png"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := imageio.Decode(raw, imageio.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.Detector.Regions(ctx, img.Image)
	if err != nil {
		t.Fatal(err)
	}
	box := r.Boxes[0] // the proposal the RPN ranks first
	emb, err := m.Embedder.(vocabulary.ExemplarEmbedder).EmbedExemplars(ctx, img.Image, [][4]float32{box})
	if err != nil {
		t.Fatal(err)
	}
	spec := vocabulary.Spec{Categories: []string{"dog", "violin", "bacon", "scarf", "rocket", "umbrella"},
		Exemplars: []vocabulary.ExemplarCategory{{Label: "thing", Embeddings: emb}}}
	vocab, err := vocabulary.Build(ctx, m.Embedder, vocabulary.BaseNames(m.Info.BaseCategories), spec)
	if err != nil {
		t.Fatal(err)
	}
	opts := m.Info.Defaults
	opts.ScoreThreshold = 0.05
	res, err := m.Detector.Score(ctx, r, vocab, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range res.Detections {
		if d.Label == "thing" && exemplarIoU(d.Box, box) >= 0.5 {
			t.Logf("found the exemplar's box again: score %.3f, IoU %.2f (%d detections)", d.Score, exemplarIoU(d.Box, box), len(res.Detections))
			return
		}
	}
	t.Fatalf("no detection labelled thing on the exemplar's box %v: %+v", box, res.Detections)
}

func exemplarIoU(a, b [4]float32) float32 {
	ix := max(0, min(a[2], b[2])-max(a[0], b[0]))
	iy := max(0, min(a[3], b[3])-max(a[1], b[1]))
	inter := ix * iy
	return inter / ((a[2]-a[0])*(a[3]-a[1]) + (b[2]-b[0])*(b[3]-b[1]) - inter)
}
