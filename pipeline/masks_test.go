package pipeline

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/mask"
	"github.com/vild/vild/ort"
)

func openDefault(tb testing.TB) (*Pipeline, *bundle.Bundle) {
	tb.Helper()
	bun, err := bundle.Open(filepath.Join(testbundle.Root(tb), "models", "default"))
	if err != nil {
		tb.Skipf("no default bundle: %v", err)
	}
	p, err := Open(bun, testbundle.Runtime(tb, ort.Config{}), Config{Workers: 1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p, bun
}

// Detect with masks on the default bundle's scene: every detection carries
// an RLE of the image's size whose pixels lie about its box (the paste
// expands the box by (M+2)/M), the same detections as without masks; with
// "polygon" the contours instead; regions keep their features.
func TestDetectMasks(t *testing.T) {
	p, bun := openDefault(t)
	if !p.HasMasks() {
		t.Fatal("the default bundle has a mask head")
	}
	img := defaultScene(t, bun)
	vocab := categoryVocabulary(t, bun)
	ctx := context.Background()
	r, err := p.Regions(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("features kept per image: %d bytes", r.Features.Bytes())
	opts := p.DefaultOptions()
	plain, err := p.Score(ctx, r, vocab, opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Masks = detector.MasksRLE
	res, err := p.Score(ctx, r, vocab, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Detections) == 0 || len(res.Detections) != len(plain.Detections) {
		t.Fatalf("%d detections with masks, %d without", len(res.Detections), len(plain.Detections))
	}
	nonEmpty := 0
	for i, d := range res.Detections {
		if d.Box != plain.Detections[i].Box || d.Mask == nil || d.Polygons != nil || plain.Detections[i].Mask != nil {
			t.Fatalf("detection %d: %+v", i, d)
		}
		m, err := mask.DecodeRLE(*d.Mask)
		if err != nil || m.Width != res.Width || m.Height != res.Height {
			t.Fatalf("detection %d: %v %dx%d", i, err, m.Width, m.Height)
		}
		if m.Area() > 0 {
			nonEmpty++
		}
		padX, padY := (d.Box[2]-d.Box[0])/28+1, (d.Box[3]-d.Box[1])/28+1
		for y := range m.Height {
			for x := range m.Width {
				if m.At(x, y) && (float32(x) < d.Box[0]-padX || float32(x) > d.Box[2]+padX ||
					float32(y) < d.Box[1]-padY || float32(y) > d.Box[3]+padY) {
					t.Fatalf("detection %d: mask pixel (%d, %d) outside its box %v", i, x, y, d.Box)
				}
			}
		}
	}
	t.Logf("%d detections, %d with non-empty masks, masks took %s", len(res.Detections), nonEmpty, res.Timings.Masks)
	if nonEmpty < len(res.Detections)/2 {
		t.Errorf("only %d of %d masks are non-empty", nonEmpty, len(res.Detections))
	}
	opts.Masks = detector.MasksPolygon
	res, err = p.Score(ctx, r, vocab, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range res.Detections {
		if d.Mask != nil {
			t.Fatalf("detection %d: an RLE with polygons asked", i)
		}
		for _, poly := range d.Polygons {
			if len(poly) < 8 || len(poly)%2 != 0 {
				t.Fatalf("detection %d: polygon %v", i, poly)
			}
		}
	}
}

// A bundle without a mask head answers ErrMasksUnsupported to a request for
// masks, and keeps no features.
func TestMasksUnsupported(t *testing.T) {
	b := testbundle.Fixture(t)
	if b.Manifest.MaskHead != nil {
		t.Skip("the fixture has a mask head")
	}
	p, err := Open(b, testbundle.Runtime(t, ort.Config{}), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	img := goldenImage(t, b, "exact")
	r, err := p.Regions(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if r.Features != nil || p.HasMasks() {
		t.Fatal("features kept without a mask head")
	}
	vocab := categoryVocabulary(t, b)
	opts := p.DefaultOptions()
	opts.Masks = detector.MasksRLE
	if _, err := p.Score(context.Background(), r, vocab, opts); !errors.Is(err, detector.ErrMasksUnsupported) {
		t.Fatalf("err = %v, want ErrMasksUnsupported", err)
	}
}

// BenchmarkMasks is what masks add to a detect request with 10 detections
// (the default bundle's 384x384 scene, every category, at most 10
// detections): detect without masks, with RLE masks and with polygons, in
// the same run, so docs/performance.md gives their ratio. "interleaved"
// runs the three in turn within each iteration and reports each one's mean
// time and the ratios to detect, so a machine whose load drifts during the
// run slows all three alike. One worker, one intra-op thread, as
// BenchmarkDefaultBundle. "masks-stage/detect" is the masks' own time
// (Timings.Masks: RoIAlign, mask head, paste, RLE) over the time of a detect
// without masks, the least noisy of the figures.
func BenchmarkMasks(b *testing.B) {
	p, bun := openDefault(b)
	img := defaultScene(b, bun)
	vocab := categoryVocabulary(b, bun)
	ctx := context.Background()
	opts := p.DefaultOptions()
	opts.MaxDetections = 10
	opts.ScoreThreshold = 0.01
	res, err := p.Detect(ctx, img, vocab, opts)
	if err != nil {
		b.Fatal(err)
	}
	if len(res.Detections) != 10 {
		b.Fatalf("%d detections, want 10", len(res.Detections))
	}
	kinds := []struct {
		name  string
		masks detector.Masks
	}{{"detect", detector.MasksNone}, {"detect+rle", detector.MasksRLE}, {"detect+polygon", detector.MasksPolygon}}
	b.Run("interleaved", func(b *testing.B) {
		var spent [3]time.Duration
		var stage time.Duration
		for b.Loop() {
			for i, c := range kinds {
				o := opts
				o.Masks = c.masks
				t0 := time.Now()
				res, err := p.Detect(ctx, img, vocab, o)
				if err != nil {
					b.Fatal(err)
				}
				spent[i] += time.Since(t0)
				if c.masks == detector.MasksRLE {
					stage += res.Timings.Masks
				}
			}
		}
		b.ReportMetric(float64(stage)/float64(spent[0]), "masks-stage/detect")
		for i, c := range kinds {
			b.ReportMetric(float64(spent[i].Milliseconds())/float64(b.N), "ms/"+c.name)
		}
		b.ReportMetric(float64(spent[1])/float64(spent[0]), "rle/detect")
		b.ReportMetric(float64(spent[2])/float64(spent[0]), "polygon/detect")
		b.ReportMetric(0, "ns/op")
	})
	for _, c := range kinds {
		o := opts
		o.Masks = c.masks
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := p.Detect(ctx, img, vocab, o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
