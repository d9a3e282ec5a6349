package textbank

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/tokenizer"
)

// fakeEncoder stands in for text_encoder.onnx: a deterministic, non-normalised
// function of the ids, so tests can compute the expected ensemble.
type fakeEncoder struct {
	ctxLen, dim int
	runs        atomic.Int64
	gate        chan struct{} // when set, Run waits for it (or the context)
	badShape    bool
}

func (f *fakeEncoder) Name() string { return "fake text encoder" }
func (f *fakeEncoder) Inputs() []ort.Info {
	return []ort.Info{{Name: InputIDs, DType: ort.Int64, Shape: []int64{-1, int64(f.ctxLen)}}}
}
func (f *fakeEncoder) Outputs() []ort.Info {
	return []ort.Info{{Name: OutputEmbeddings, DType: ort.Float32, Shape: []int64{-1, int64(f.dim)}}}
}
func (f *fakeEncoder) Close() error { return nil }

func (f *fakeEncoder) Run(ctx context.Context, in map[string]ort.Tensor) (map[string]ort.Tensor, error) {
	f.runs.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	ids := in[InputIDs]
	b := int(ids.Shape[0])
	out := make([]float32, 0, b*f.dim)
	for r := range b {
		out = append(out, fakeRow(ids.I64[r*f.ctxLen:(r+1)*f.ctxLen], f.dim)...)
	}
	d := f.dim
	if f.badShape {
		d--
		out = out[:b*d]
	}
	return map[string]ort.Tensor{OutputEmbeddings: {Shape: []int64{int64(b), int64(d)}, F32: out}}, nil
}

func fakeRow(ids []int64, dim int) []float32 {
	row := make([]float32, dim)
	for j := range row {
		var s float64
		for k, id := range ids {
			s += float64(id) * float64(k+1) * float64(j+1)
		}
		row[j] = float32(2 + math.Sin(s/1000))
	}
	return row
}

func testTokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.LoadDir(filepath.Join(testbundle.Root(t), testbundle.FixtureDir, "tokenizer"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

var templates = []string{"a photo of a {}.", "a {} in the scene."}

func newBank(t *testing.T, enc *fakeEncoder, store Store, digest string) *Bank {
	t.Helper()
	b, err := New(Config{Session: enc, Tokenizer: testTokenizer(t), Templates: templates,
		ContextLength: enc.ctxLen, Dim: enc.dim, Digest: digest, Store: store,
		Precomputed: map[string][]float32{"known": {1, 0, 0, 0}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEmbedIsThePromptEnsemble(t *testing.T) {
	enc := &fakeEncoder{ctxLen: 16, dim: 4}
	bank := newBank(t, enc, nil, "sha256:test")
	got, err := bank.Embed(context.Background(), []string{"red umbrella", "known", "red umbrella"})
	if err != nil {
		t.Fatal(err)
	}
	tok := testTokenizer(t)
	var rows [][]float32
	for _, tmpl := range templates {
		ids, _ := tok.EncodeContext(fmt.Sprintf(tmplToFormat(tmpl), "red umbrella"), 16)
		rows = append(rows, fakeRow(ids, 4))
	}
	// Expected: normalise each row, average, normalise.
	want := make([]float64, 4)
	for _, r := range rows {
		var n float64
		for _, v := range r {
			n += float64(v * v)
		}
		for j, v := range r {
			want[j] += float64(v) / math.Sqrt(n)
		}
	}
	var n float64
	for _, v := range want {
		n += v * v
	}
	for j := range want {
		if d := math.Abs(want[j]/math.Sqrt(n) - float64(got[0][j])); d > 1e-6 {
			t.Errorf("embedding[%d] = %v, want %v", j, got[0][j], want[j]/math.Sqrt(n))
		}
	}
	if fmt.Sprint(got[1]) != "[1 0 0 0]" {
		t.Errorf("precomputed name: %v", got[1])
	}
	if fmt.Sprint(got[0]) != fmt.Sprint(got[2]) {
		t.Error("same name, different embeddings")
	}
	if s := bank.Stats(); s.Encoded != 1 || enc.runs.Load() != 1 {
		t.Errorf("stats %+v, %d runs: want one name encoded in one run", s, enc.runs.Load())
	}
}

func tmplToFormat(t string) string {
	out := ""
	for i := 0; i < len(t); i++ {
		if i+1 < len(t) && t[i:i+2] == "{}" {
			out += "%s"
			i++
		} else {
			out += string(t[i])
		}
	}
	return out
}

func TestConcurrentCallersEncodeOnce(t *testing.T) {
	enc := &fakeEncoder{ctxLen: 16, dim: 4}
	bank := newBank(t, enc, nil, "sha256:test")
	var wg sync.WaitGroup
	results := make([][][]float32, 32)
	for i := range results {
		wg.Go(func() {
			r, err := bank.Embed(context.Background(), []string{"mug", "kettle", "mug"})
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		})
	}
	wg.Wait()
	for _, r := range results[1:] {
		if fmt.Sprint(r) != fmt.Sprint(results[0]) {
			t.Fatal("concurrent callers got different embeddings")
		}
	}
	if n := enc.runs.Load(); n != 2 {
		t.Errorf("%d encoder runs for 2 distinct names", n)
	}
}

func TestDiskCacheSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "textbank.db")
	open := func(digest string) (*Bank, *fakeEncoder) {
		store, err := OpenBoltStore(path)
		if err != nil {
			t.Fatal(err)
		}
		enc := &fakeEncoder{ctxLen: 16, dim: 4}
		return newBank(t, enc, store, digest), enc
	}
	bank, _ := open("sha256:a")
	first, err := bank.Embed(context.Background(), []string{"kettle"})
	if err != nil {
		t.Fatal(err)
	}
	if err := bank.Close(); err != nil {
		t.Fatal(err)
	}

	bank, enc := open("sha256:a")
	again, err := bank.Embed(context.Background(), []string{"kettle"})
	if err != nil {
		t.Fatal(err)
	}
	if enc.runs.Load() != 0 || bank.Stats().Disk != 1 || fmt.Sprint(first) != fmt.Sprint(again) {
		t.Errorf("after restart: %d runs, stats %+v; want the embedding from disk", enc.runs.Load(), bank.Stats())
	}
	bank.Close()

	bank, enc = open("sha256:b") // another model: its own key space
	if _, err := bank.Embed(context.Background(), []string{"kettle"}); err != nil {
		t.Fatal(err)
	}
	if enc.runs.Load() != 1 {
		t.Errorf("another bundle digest reused a cached embedding")
	}
	bank.Close()
}

func TestEmbedErrors(t *testing.T) {
	bank := newBank(t, &fakeEncoder{ctxLen: 16, dim: 4, badShape: true}, nil, "d")
	if _, err := bank.Embed(context.Background(), []string{"mug"}); !errors.Is(err, ErrEncoder) {
		t.Errorf("bad encoder output: %v", err)
	}
	for _, name := range []string{"", "  ", "a\x00b"} {
		if _, err := bank.Embed(context.Background(), []string{name}); !errors.Is(err, ErrName) {
			t.Errorf("name %q: %v", name, err)
		}
	}
	enc := &fakeEncoder{ctxLen: 16, dim: 4, gate: make(chan struct{})}
	bank = newBank(t, enc, nil, "d")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := bank.Embed(ctx, []string{"mug"}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
	close(enc.gate)
	if _, err := New(Config{Session: &fakeEncoder{ctxLen: 16, dim: 4}, Tokenizer: testTokenizer(t),
		Templates: templates, ContextLength: 77, Dim: 4}); !errors.Is(err, ort.ErrModel) {
		t.Errorf("context length mismatch with the graph: %v", err)
	}
}
