package pipeline

import (
	"context"
	"fmt"
	"image"
	"image/draw"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/ort"
)

// BenchmarkDefaultBundle times the shipped model (models/default) end to end
// on a 384x384 scene (the bundle's 384x192 golden "exact" scene strip, twice,
// one above the other: the size of a held-out scene) with the whole category
// list as the vocabulary:
//
//   - backbone: the backbone graph alone on the preprocessed tensor, the
//     baseline the other figures are divided by in docs/performance.md;
//   - regions: preprocessing (resize, normalise: the image is already
//     decoded), backbone, proposals, RoIAlign and the
//     box-head graph (everything that does not depend on the vocabulary);
//   - score: scoring the regions against every category, ensemble, NMS;
//   - detect: regions and score, what one POST /v1/detect costs.
//
// One pipeline worker and one intra-op thread (`vild serve` gives its one
// worker cores / workers threads: BenchmarkDefaultBundleThreads compares).
func BenchmarkDefaultBundle(b *testing.B) {
	dir := filepath.Join(testbundle.Root(b), "models", "default")
	bun, err := bundle.Open(dir)
	if err != nil {
		b.Skipf("no default bundle: %v", err)
	}
	p, err := Open(bun, testbundle.Runtime(b, ort.Config{}), Config{Workers: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	img := defaultScene(b, bun)
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	vocab := categoryVocabulary(b, bun)
	opts := p.DefaultOptions()
	ctx := context.Background()

	b.Logf("bundle %s, %d categories, %dx%d image", bun.Manifest.Name, len(vocab.Classes), w, h)

	b.Run("backbone", func(b *testing.B) {
		data, shape, _, err := imageio.Preprocess(img, p.prep)
		if err != nil {
			b.Fatal(err)
		}
		in := map[string]ort.Tensor{InputImage: {Shape: shape[:], F32: data}}
		for b.Loop() {
			if _, err := p.backbone.Run(ctx, in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("regions", func(b *testing.B) {
		for b.Loop() {
			if _, err := p.Regions(ctx, img); err != nil {
				b.Fatal(err)
			}
		}
	})
	r, err := p.Regions(ctx, img)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("score", func(b *testing.B) {
		for b.Loop() {
			if _, err := p.Score(ctx, r, vocab, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("detect", func(b *testing.B) {
		for b.Loop() {
			if _, err := p.Detect(ctx, img, vocab, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDefaultBundleThreads runs one detection of the default bundle
// (BenchmarkDefaultBundle's scene and vocabulary) with one ONNX Runtime
// intra-op thread and with `vild serve`'s default, cores / workers threads for
// its one worker, in the same run, so the two can be compared as a ratio
// (docs/decisions/0001-inference-runtime.md).
func BenchmarkDefaultBundleThreads(b *testing.B) {
	dir := filepath.Join(testbundle.Root(b), "models", "default")
	bun, err := bundle.Open(dir)
	if err != nil {
		b.Skipf("no default bundle: %v", err)
	}
	scene := defaultScene(b, bun)
	vocab := categoryVocabulary(b, bun)
	ctx := context.Background()
	for _, threads := range []int{1, runtime.GOMAXPROCS(0)} {
		p, err := Open(bun, testbundle.Runtime(b, ort.Config{IntraOpThreads: threads}), Config{Workers: 1})
		if err != nil {
			b.Fatal(err)
		}
		opts := p.DefaultOptions()
		b.Run(fmt.Sprintf("intra-op=%d", threads), func(b *testing.B) {
			for b.Loop() {
				if _, err := p.Detect(ctx, scene, vocab, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
		p.Close()
	}
}

// defaultScene is the bundle's golden "exact" scene strip twice, one above
// the other: the size of a held-out scene.
func defaultScene(b testing.TB, bun *bundle.Bundle) image.Image {
	strip := goldenImage(b, bun, "exact")
	w, h := strip.Bounds().Dx(), strip.Bounds().Dy()
	scene := image.NewRGBA(image.Rect(0, 0, w, 2*h))
	draw.Draw(scene, image.Rect(0, 0, w, h), strip, strip.Bounds().Min, draw.Src)
	draw.Draw(scene, image.Rect(0, h, w, 2*h), strip, strip.Bounds().Min, draw.Src)
	return scene
}
