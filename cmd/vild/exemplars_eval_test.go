package main

import (
	"context"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/vild/vild/detector"
)

func TestParseExemplarsEvalConfig(t *testing.T) {
	env := func(string) string { return "" }
	c, err := parseExemplarsEvalConfig([]string{"--annotations", "a.json", "--images", "im", "--pool-annotations", "p.json",
		"--pool-images", "pim", "--shots", "5,1", "--seed", "3"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Shots, []int{1, 5}) || c.Seed != 3 || c.MinSide != 16 || c.LabelsPerBox != 20 {
		t.Errorf("config %+v", c)
	}
	for _, args := range [][]string{
		{"--annotations", "a.json", "--images", "im"}, // no pool
		{"--annotations", "a", "--images", "i", "--pool-annotations", "p", "--pool-images", "q", "--shots", "0"},
		{"--annotations", "a", "--images", "i", "--pool-annotations", "p", "--pool-images", "q", "--shots", "9"},
		{"--annotations", "a", "--images", "i", "--pool-annotations", "p", "--pool-images", "q", "--min-side", "0"},
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
	rows, err := exemplarVariants(context.Background(), []int{1, 2}, []string{"cat", "dango", "yak"}, []string{"cat"},
		[]string{"dango", "yak"}, embs, lengthEmbedder{})
	if err != nil {
		t.Fatal(err)
	}
	var methods []string
	for _, r := range rows {
		methods = append(methods, r.method+"/"+string(r.head))
	}
	want := []string{"names only/ensemble", "1 exemplar(s), no name/ensemble", "2 exemplar(s), no name/ensemble",
		"name + 2 exemplar(s)/ensemble", "name + 2 exemplar(s) as two classes of one label/ensemble",
		"2 exemplar(s), shifted by the image-to-text mean gap/ensemble", "2 exemplar(s), weighted as base (text head λ)/ensemble", "2 exemplar(s), ViLD-image head alone/image",
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
}
