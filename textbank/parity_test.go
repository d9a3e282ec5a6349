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
		t.Run(b.Manifest.Name, func(t *testing.T) {
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
			if d, at := testbundle.MaxAbsDiff(out[OutputEmbeddings].F32, want.F32); d > 1e-4 {
				t.Errorf("text encoder: max abs diff %g at %d, tolerance 1e-4", d, at)
			}

			// Recompute every category's ensemble (no precomputed entries).
			bank, err := New(Config{Session: sess, Tokenizer: tok, Templates: m.Text.Templates,
				ContextLength: l, Dim: m.Embedding.Dim, Digest: b.Digest})
			if err != nil {
				t.Fatal(err)
			}
			names := make([]string, len(m.Categories))
			for i, c := range m.Categories {
				names[i] = c.Name
			}
			got, err := bank.Embed(context.Background(), names)
			if err != nil {
				t.Fatal(err)
			}
			pre, err := b.CategoryEmbeddings()
			if err != nil {
				t.Fatal(err)
			}
			for i := range names {
				if d, at := testbundle.MaxAbsDiff(got[i], pre[i]); d > 1e-4 {
					t.Errorf("category %q: max abs diff %g at %d from category_embeddings.npy", names[i], d, at)
				}
			}
		})
	}
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
