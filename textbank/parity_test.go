package textbank

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"testing"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/tokenizer"
)

// TestBundleParity runs over every bundle (fixture, and the default one when
// present): the tokenizer gives the exporter's ids, the text encoder under ONNX
// Runtime its embeddings, and the whole prompt ensemble recomputed from the
// names equals the bundle's precomputed category_embeddings.npy.
func TestBundleParity(t *testing.T) {
	rt := testbundle.Runtime(t, ort.Config{})
	for _, b := range testbundle.All(t) {
		t.Run(b.Manifest.Name, func(t *testing.T) { checkTextParity(t, rt, b, 0) })
	}
}

// checkTextParity checks b's text golden (ids and embeddings, 1e-4) and
// recomputes the prompt ensembles of its categories against
// category_embeddings.npy (1e-4): all of them when samples is 0, else that
// many evenly spaced ones.
func checkTextParity(t *testing.T, rt ort.Runtime, b *bundle.Bundle, samples int) {
	m := b.Manifest
	tok, err := tokenizer.LoadFS(b.FS, bundle.TokenizerDir)
	if err != nil {
		t.Fatal(err)
	}
	model, err := b.ReadFile(bundle.TextEncoderFile)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := rt.NewSession(bundle.TextEncoderFile, model)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()

	golden := path.Join(bundle.GoldenDir, "text")
	raw, err := b.ReadFile(path.Join(golden, "prompts.json"))
	if err != nil {
		t.Fatal(err)
	}
	var prompts []string
	if err := json.Unmarshal(raw, &prompts); err != nil {
		t.Fatal(err)
	}
	wantIDs := testbundle.Array(t, b, path.Join(golden, "input_ids.npy"))
	l := m.Text.ContextLength
	var ids []int64
	for i, p := range prompts {
		row, _ := tok.EncodeContext(p, l)
		if fmt.Sprint(row) != fmt.Sprint(wantIDs.I64[i*l:(i+1)*l]) {
			t.Errorf("prompt %q: ids %v, exporter's %v", p, row, wantIDs.I64[i*l:(i+1)*l])
		}
		ids = append(ids, row...)
	}
	out, err := sess.Run(context.Background(), map[string]ort.Tensor{InputIDs: {Shape: []int64{int64(len(prompts)), int64(l)}, I64: ids}})
	if err != nil {
		t.Fatal(err)
	}
	want := testbundle.Array(t, b, path.Join(golden, "text_embeddings.npy"))
	d, at := testbundle.MaxAbsDiff(out[OutputEmbeddings].F32, want.F32)
	if d > 1e-4 {
		t.Errorf("text encoder: max abs diff %g at %d, tolerance 1e-4", d, at)
	}
	t.Logf("text encoder: %d prompts, max abs diff %.3g", len(prompts), d)

	bank, err := New(Config{Session: sess, Tokenizer: tok, Templates: m.Text.Templates,
		ContextLength: l, Dim: m.Embedding.Dim, Digest: b.Digest})
	if err != nil {
		t.Fatal(err)
	}
	pre, err := b.CategoryEmbeddings()
	if err != nil {
		t.Fatal(err)
	}
	n := len(m.Categories)
	k := n
	if samples > 0 {
		k = min(samples, n)
	}
	var idx []int
	var names []string
	for j := range k {
		i := j
		if k < n {
			i = j * (n - 1) / max(1, k-1)
		}
		idx, names = append(idx, i), append(names, m.Categories[i].Name)
	}
	got, err := bank.Embed(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for j, i := range idx {
		d, at := testbundle.MaxAbsDiff(got[j], pre[i])
		if d > 1e-4 {
			t.Errorf("category %d %q: max abs diff %g at %d from category_embeddings.npy", i, names[j], d, at)
		}
		worst = max(worst, d)
	}
	t.Logf("%d of %d categories recomputed: max abs diff %.3g from category_embeddings.npy", len(idx), n, worst)
}

// TestOpen loads a bank from a bundle: precomputed categories need no encoder
// run, new names do.
func TestOpen(t *testing.T) {
	rt := testbundle.Runtime(t, ort.Config{})
	b := testbundle.Fixture(t)
	bank, err := Open(b, rt, Options{CachePath: t.TempDir() + "/cache.db"})
	if err != nil {
		t.Fatal(err)
	}
	defer bank.Close()
	if _, err := bank.Embed(context.Background(), []string{b.Manifest.Categories[0].Name}); err != nil {
		t.Fatal(err)
	}
	if s := bank.Stats(); s.Encoded != 0 || s.Memory != 1 {
		t.Errorf("precomputed category: stats %+v", s)
	}
	e, err := bank.Embed(context.Background(), []string{"teapot"})
	if err != nil {
		t.Fatal(err)
	}
	if s := bank.Stats(); s.Encoded != 1 || len(e[0]) != b.Manifest.Embedding.Dim {
		t.Errorf("new name: stats %+v, dim %d", s, len(e[0]))
	}
}
