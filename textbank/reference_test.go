package textbank

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"testing"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/tokenizer"
)

// referenceSamples is how many of the reference bundle's categories
// TestReferenceBundleText encodes again: each is 12 prompts through the
// 77-token CLIP B/32 text tower (about 2.9 GMAC a prompt), so all 1,000 would
// take most of an hour on two cores.
const referenceSamples = 10

// TestReferenceBundleText runs TestBundleParity's checks on the reference
// bundle ($VILD_REFERENCE_BUNDLE; `make reference`): the tokenizer gives the
// exporter's ids, the text encoder under ONNX Runtime its embeddings (1e-4),
// and the prompt ensembles of evenly spaced categories, recomputed from their
// names, equal category_embeddings.npy (1e-4). Skipped when the variable is unset.
func TestReferenceBundleText(t *testing.T) {
	dir := os.Getenv("VILD_REFERENCE_BUNDLE")
	if dir == "" {
		t.Skip("skipping: VILD_REFERENCE_BUNDLE is not set (make reference sets it)")
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(testbundle.Root(t), dir)
	}
	rt := testbundle.Runtime(t, ort.Config{})
	b, err := bundle.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
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
	var idx []int
	var names []string
	for k := range min(referenceSamples, n) {
		i := k * (n - 1) / max(1, min(referenceSamples, n)-1)
		idx, names = append(idx, i), append(names, m.Categories[i].Name)
	}
	got, err := bank.Embed(context.Background(), names)
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for k, i := range idx {
		d, at := testbundle.MaxAbsDiff(got[k], pre[i])
		if d > 1e-4 {
			t.Errorf("category %d %q: max abs diff %g at %d from category_embeddings.npy", i, names[k], d, at)
		}
		worst = max(worst, d)
	}
	t.Logf("categories %v of %d recomputed: max abs diff %.3g from category_embeddings.npy", idx, n, worst)
}
