package client_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vild/vild/api"
	"github.com/vild/vild/bundle"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/handlers"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/models"
	"github.com/vild/vild/observe"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/pipeline"
	"github.com/vild/vild/textbank"
	"github.com/vild/vild/vocabulary"
)

// The client against the server on the embedded model (ONNX Runtime: set
// VILD_ORT_LIB, or `make setup`; skipped without it): what comes over HTTP
// equals what the same pipeline and text bank give in-process, for one
// image, a batch, a registered image re-scored, and text embeddings.
func TestEmbeddedModel(t *testing.T) {
	if testing.Short() {
		t.Skip("loads the embedded model")
	}
	ctx := context.Background()
	b, err := models.Default()
	if err != nil {
		t.Fatal(err)
	}
	rt := testbundle.Runtime(t, ort.Config{})
	p, err := pipeline.Open(b, rt, pipeline.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	bank, err := textbank.Open(b, rt, textbank.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bank.Close() })

	cfg := handlers.DefaultConfig()
	dec := imageio.Decoder{Limits: imageio.Limits{MaxSide: cfg.MaxImageSide, MaxPixels: int64(cfg.MaxImagePixels)}}
	model := api.Model{ID: b.Manifest.Name, Name: b.Manifest.Name, Digest: b.Digest,
		EmbeddingDim: b.Manifest.Embedding.Dim, Templates: b.Manifest.Text.Templates, Defaults: p.DefaultOptions()}
	var cats []api.ModelCategory
	for _, c := range b.Manifest.Categories {
		cats = append(cats, api.ModelCategory{Name: c.Name, Split: c.Split, Synonyms: c.Synonyms})
	}
	model.SetCategories(cats)
	h, err := handlers.New(handlers.Deps{Detector: p, Embedder: bank, Decoder: dec, NameError: textbank.ErrName,
		Model: model, Config: cfg,
		Middleware: []func(http.Handler) http.Handler{observe.Options{Log: slog.New(slog.DiscardHandler)}.Middleware}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL)

	// The exporter's golden picture (384×192), kept beside models/default.
	raw, err := os.ReadFile(filepath.Join(testbundle.Root(t), "models", "default", bundle.GoldenDir, "exact", "input.png"))
	if err != nil {
		t.Fatal(err)
	}
	names := model.Categories[:40]
	low := float32(0.05)
	// softmax scores: over these 40 names, none of them in the picture,
	// stable scores find nothing above 0.05 (and "scores" goes through the
	// client)
	opts := api.DetectOptions{Categories: names, ScoreThreshold: &low, Scores: string(detector.ScoresSoftmax)}

	// In process: the same decoder, vocabulary and options the server uses.
	img, err := dec.Decode(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	vocab, err := vocabulary.Build(ctx, bank, vocabulary.BaseNames(model.BaseCategories), vocabulary.Spec{Categories: names})
	if err != nil {
		t.Fatal(err)
	}
	dopts := p.DefaultOptions()
	dopts.ScoreThreshold = low
	dopts.Scores = detector.ScoresSoftmax
	regions, err := p.Regions(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	want, err := p.Score(ctx, regions, vocab, dopts)
	if err != nil {
		t.Fatal(err)
	}
	if len(want.Detections) == 0 {
		t.Fatal("the in-process detector found nothing: the comparison would be empty")
	}
	same := func(what string, got []detector.Detection) {
		t.Helper()
		if len(got) != len(want.Detections) {
			t.Fatalf("%s: %d detections, in process %d", what, len(got), len(want.Detections))
		}
		for i, d := range got {
			w := want.Detections[i]
			if d.Label != w.Label || d.Score != w.Score || d.Box != w.Box {
				t.Fatalf("%s: detection %d is %+v, in process %+v", what, i, d, w)
			}
		}
	}

	res, err := c.Detect(ctx, raw, opts)
	if err != nil {
		t.Fatal(err)
	}
	same("detect", res.Detections)
	if res.Model != model.ID || res.VocabularyDigest != vocab.Digest || res.TimingsMS.Backbone <= 0 {
		t.Fatalf("answer %+v", res)
	}

	batch, err := c.DetectBatch(ctx, [][]byte{raw, raw}, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range batch.Results {
		same("batch", r.Detections)
	}

	s, err := c.CreateImage(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	if s.Regions != len(regions.Boxes) {
		t.Fatalf("registered %d regions, in process %d", s.Regions, len(regions.Boxes))
	}
	res, err = c.DetectImage(ctx, s.ID, opts)
	if err != nil {
		t.Fatal(err)
	}
	same("re-scored", res.Detections)
	t.Logf("%d detections of %d categories over %d regions, equal over HTTP and in process", len(want.Detections), len(names), len(regions.Boxes))
	if res.TimingsMS.Backbone != 0 {
		t.Fatalf("re-scoring ran the backbone: %+v", res.TimingsMS)
	}

	texts := []string{"red umbrella", names[0]}
	emb, err := c.EmbedTexts(ctx, texts)
	if err != nil {
		t.Fatal(err)
	}
	wantEmb, err := bank.Embed(ctx, texts)
	if err != nil {
		t.Fatal(err)
	}
	if emb.Dim != b.Manifest.Embedding.Dim || len(emb.Embeddings) != 2 {
		t.Fatalf("embeddings: dim %d, %d of them", emb.Dim, len(emb.Embeddings))
	}
	for i := range texts {
		if !slices.Equal(emb.Embeddings[i].Embedding, wantEmb[i]) {
			t.Fatalf("%q: the embedding differs from the text bank's", texts[i])
		}
	}
}
