package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"path"
	"sync"
	"testing"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/ort"
)

func fixturePipeline(t testing.TB, cfg ort.Config) (*Pipeline, *bundle.Bundle) {
	t.Helper()
	rt := testbundle.Runtime(t, cfg)
	b := testbundle.Fixture(t)
	p, err := Open(b, rt, Config{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, b
}

func goldenImage(t testing.TB, b *bundle.Bundle, c string) image.Image {
	t.Helper()
	raw, err := b.ReadFile(path.Join(bundle.GoldenDir, c, "input.png"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestConcurrentRegions shares one pipeline (one session per graph) among 64
// goroutines: every result equals the serial one.
func TestConcurrentRegions(t *testing.T) {
	p, b := fixturePipeline(t, ort.Config{})
	imgs := []image.Image{goldenImage(t, b, "exact"), goldenImage(t, b, "downscale"), goldenImage(t, b, "upscale")}
	want := make([]string, len(imgs))
	for i, img := range imgs {
		r, err := p.Regions(context.Background(), img)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = fmt.Sprint(r.Boxes, r.TextEmbeddings, r.ImageEmbeddings)
	}
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			r, err := p.Regions(context.Background(), imgs[g%len(imgs)])
			if err != nil {
				t.Error(err)
				return
			}
			if got := fmt.Sprint(r.Boxes, r.TextEmbeddings, r.ImageEmbeddings); got != want[g%len(imgs)] {
				t.Errorf("goroutine %d: regions differ from the serial run", g)
			}
		})
	}
	wg.Wait()
}

func TestCanceled(t *testing.T) {
	p, b := fixturePipeline(t, ort.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Regions(ctx, goldenImage(t, b, "exact")); !errors.Is(err, detector.ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Errorf("Regions: %v", err)
	}
	if _, err := p.Score(ctx, &detector.Regions{}, categoryVocabulary(t, b), p.DefaultOptions()); !errors.Is(err, detector.ErrCanceled) {
		t.Errorf("Score: %v", err)
	}
}

func TestScoreErrors(t *testing.T) {
	p, b := fixturePipeline(t, ort.Config{})
	r, err := p.Regions(context.Background(), goldenImage(t, b, "exact"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Score(context.Background(), r, &detector.Vocabulary{}, p.DefaultOptions()); !errors.Is(err, detector.ErrEmptyVocabulary) {
		t.Errorf("empty vocabulary: %v", err)
	}
	bad := &detector.Vocabulary{Classes: []detector.Class{{Label: "x", Embedding: []float32{1, 0}}}}
	if _, err := p.Score(context.Background(), r, bad, p.DefaultOptions()); !errors.Is(err, detector.ErrEmbeddingDim) {
		t.Errorf("wrong dimension: %v", err)
	}
	if err := p.Warmup(context.Background()); err != nil {
		t.Errorf("warm-up: %v", err)
	}
}

// BenchmarkBackbone sweeps ONNX Runtime's intra-op threads on the fixture's
// backbone (docs/decisions/0001-inference-runtime.md records the figures).
func BenchmarkBackbone(b *testing.B) {
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("intra=%d", threads), func(b *testing.B) {
			p, bun := fixturePipeline(b, ort.Config{IntraOpThreads: threads})
			image := testbundle.Array(b, bun, path.Join(bundle.GoldenDir, "exact", "image.npy"))
			in := map[string]ort.Tensor{InputImage: {Shape: []int64{1, 3, int64(image.Shape[2]), int64(image.Shape[3])}, F32: image.F32}}
			b.ResetTimer()
			for b.Loop() {
				if _, err := p.backbone.Run(context.Background(), in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRegions is the vocabulary-independent pipeline end to end,
// with intra-op threads 1 and 2, serial and with 2 requests in parallel.
func BenchmarkRegions(b *testing.B) {
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("intra=%d", threads), func(b *testing.B) {
			p, bun := fixturePipeline(b, ort.Config{IntraOpThreads: threads})
			img := goldenImage(b, bun, "downscale")
			for b.Loop() {
				if _, err := p.Regions(context.Background(), img); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("intra=%d/parallel=2", threads), func(b *testing.B) {
			p, bun := fixturePipeline(b, ort.Config{IntraOpThreads: threads})
			img := goldenImage(b, bun, "downscale")
			b.SetParallelism(1) // GOMAXPROCS goroutines (2 on the reference machine)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := p.Regions(context.Background(), img); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
