package pipeline

import (
	"context"
	"fmt"
	"image"
	"image/draw"
	"math"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/ort"
)

// BenchmarkDefaultBundle times the shipped model (models/default) end to end
// on a 384x384 scene (the bundle's 384x192 golden "exact" scene strip, twice,
// one above the other: the size of a held-out scene), with one pipeline
// worker and ONNX Runtime intra-op threads 1 and one per core
// (intra-op=N/...):
//
//   - backbone: the backbone graph alone on the preprocessed tensor, the
//     baseline the other figures are divided by in docs/performance.md;
//   - regions: preprocessing (resize, normalise: the image is already
//     decoded), backbone, proposals, RoIAlign and the
//     box-head graph (everything that does not depend on the vocabulary),
//     with each stage's mean wall time as a metric (preprocess-ms, ...,
//     boxhead-ms, crops-ms: detector.Timings); crops are the teacher's
//     embeddings of the best regions' crops, which the ensemble consults
//     when the manifest has embedding.crops;
//   - regions-no-crops (bundles with embedding.crops): the same without
//     the teacher's crops (pipeline.Config.NoCrops), the baseline of
//     docs/decisions/0031;
//   - score/vocabulary=K: scoring the regions against K categories,
//     ensemble, NMS; K = 10 (the first ten categories), 703 (the whole
//     category list) and 1203 (the 703 and 500 random unit vectors as novel
//     classes: LVIS's size; scoring's cost depends on K, not on the names);
//   - score-go/vocabulary=703 (one thread only): the same on scoring's
//     pure-Go loops instead of its ONNX Runtime graph, the baseline of
//     docs/decisions/0024;
//   - detect/vocabulary=703: regions and score, what one POST /v1/detect
//     costs.
//
// `make bench` runs it with ort's BenchmarkSGEMM and reports each figure as
// a ratio to the backbone and to the model's FLOP limit.
func BenchmarkDefaultBundle(b *testing.B) {
	dir := filepath.Join(testbundle.Root(b), "models", "default")
	bun, err := bundle.Open(dir)
	if err != nil {
		b.Skipf("no default bundle: %v", err)
	}
	img := defaultScene(b, bun)
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	vocabs := benchVocabularies(b, bun)
	ctx := context.Background()
	b.Logf("bundle %s, %dx%d image", bun.Manifest.Name, w, h)

	for _, threads := range []int{1, runtime.GOMAXPROCS(0)} {
		p, err := Open(bun, testbundle.Runtime(b, ort.Config{IntraOpThreads: threads}), Config{Workers: 1})
		if err != nil {
			b.Fatal(err)
		}
		opts := p.DefaultOptions()
		prefix := fmt.Sprintf("intra-op=%d/", threads)
		b.Run(prefix+"backbone", func(b *testing.B) {
			data, shape, _, err := imageio.Preprocess(img, p.prep)
			if err != nil {
				b.Fatal(err)
			}
			in := map[string]ort.Tensor{InputImage: {Shape: shape[:], F32: data}}
			loop(b, func() error { _, err := p.backbone.Run(ctx, in); return err })
		})
		b.Run(prefix+"regions", benchRegions(ctx, p, img))
		if bun.Manifest.Embedding.Crops != nil {
			q, err := Open(bun, testbundle.Runtime(b, ort.Config{IntraOpThreads: threads}), Config{Workers: 1, NoCrops: true})
			if err != nil {
				b.Fatal(err)
			}
			b.Run(prefix+"regions-no-crops", benchRegions(ctx, q, img))
			q.Close()
		}
		r, err := p.Regions(ctx, img)
		if err != nil {
			b.Fatal(err)
		}
		for _, v := range vocabs {
			b.Run(fmt.Sprintf("%sscore/vocabulary=%d", prefix, len(v.Classes)), func(b *testing.B) {
				loop(b, func() error { _, err := p.Score(ctx, r, v, opts); return err })
				// The operation count of scoring and of the box head
				// depends on it (make bench).
				b.ReportMetric(float64(len(r.Boxes)), "regions")
			})
		}
		if threads == 1 {
			// The same scoring on the pure-Go loops (scoring.Model.Graph nil):
			// the baseline of docs/decisions/0024, in the same run.
			goScorer := *p.scorer
			goScorer.Graph = nil
			q := *p
			q.scorer = &goScorer
			b.Run(prefix+"score-go/vocabulary=703", func(b *testing.B) {
				loop(b, func() error { _, err := q.Score(ctx, r, vocabs[1], opts); return err })
			})
		}
		for _, v := range vocabs {
			b.Run(fmt.Sprintf("%sdetect/vocabulary=%d", prefix, len(v.Classes)), func(b *testing.B) {
				loop(b, func() error { _, err := p.Detect(ctx, img, v, opts); return err })
			})
		}
		p.Close()
	}
}

// benchRegions times p.Regions on img, with each stage's mean wall time as a
// metric (preprocess-ms, ..., boxhead-ms, crops-ms: detector.Timings).
func benchRegions(ctx context.Context, p *Pipeline, img image.Image) func(b *testing.B) {
	return func(b *testing.B) {
		var sum detector.Timings
		loop(b, func() error {
			r, err := p.Regions(ctx, img)
			if err == nil {
				t := r.Timings
				sum.Preprocess += t.Preprocess
				sum.Backbone += t.Backbone
				sum.Proposals += t.Proposals
				sum.RoIAlign += t.RoIAlign
				sum.BoxHead += t.BoxHead
				sum.Crops += t.Crops
			}
			return err
		})
		// Where a detection's time goes, stage by stage (mean wall ms).
		for _, st := range []struct {
			name string
			d    time.Duration
		}{{"preprocess", sum.Preprocess}, {"backbone", sum.Backbone}, {"proposals", sum.Proposals},
			{"roialign", sum.RoIAlign}, {"boxhead", sum.BoxHead}, {"crops", sum.Crops}} {
			b.ReportMetric(float64(st.d)/float64(b.N)/1e6, st.name+"-ms")
		}
	}
}

// loop runs f for b.Loop and reports, beside the wall time, the process's
// CPU time per run (cpu-ns/op: all threads, GC included), which other work
// on a shared machine disturbs less than wall time.
func loop(b *testing.B, f func() error) {
	cpu0 := cpuTime()
	for b.Loop() {
		if err := f(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchVocabularies are BenchmarkDefaultBundle's vocabularies: the first ten
// categories, all 703, and the 703 with 500 random unit vectors (seeded) as
// novel classes.
func benchVocabularies(b *testing.B, bun *bundle.Bundle) []*detector.Vocabulary {
	all := categoryVocabulary(b, bun)
	if len(all.Classes) != 703 {
		b.Fatalf("%d categories, the benchmark's names say 703", len(all.Classes))
	}
	ten := &detector.Vocabulary{Classes: all.Classes[:10]}
	big := &detector.Vocabulary{Classes: slices.Clone(all.Classes)}
	r := rand.New(rand.NewPCG(1203, 1203))
	d := bun.Manifest.Embedding.Dim
	for i := range 500 {
		e := make([]float32, d)
		var n float64
		for j := range e {
			e[j] = float32(r.NormFloat64())
			n += float64(e[j]) * float64(e[j])
		}
		for j := range e {
			e[j] /= float32(math.Sqrt(n))
		}
		name := fmt.Sprintf("extra %d", i)
		big.Classes = append(big.Classes, detector.Class{Label: name, Text: name, Embedding: e})
	}
	return []*detector.Vocabulary{ten, all, big}
}

// BenchmarkDefaultBundleWorkers measures the throughput of `vild serve`'s
// settings on this machine: W concurrent detections (--workers) with T
// intra-op threads each (--intra-op-threads), on BenchmarkDefaultBundle's
// scene and 703 categories, the pipeline configured as serve configures it.
// ns/op is wall time per detection (the inverse of throughput);
// latency-ms is the mean time one detection takes; cpu-ns/op the process's
// CPU time per detection.
func BenchmarkDefaultBundleWorkers(b *testing.B) {
	dir := filepath.Join(testbundle.Root(b), "models", "default")
	bun, err := bundle.Open(dir)
	if err != nil {
		b.Skipf("no default bundle: %v", err)
	}
	scene := defaultScene(b, bun)
	vocab := categoryVocabulary(b, bun)
	ctx := context.Background()
	cores := runtime.GOMAXPROCS(0)
	for _, c := range [][2]int{{1, 1}, {1, cores}, {cores, 1}} {
		workers, threads := c[0], c[1]
		p, err := Open(bun, testbundle.Runtime(b, ort.Config{IntraOpThreads: threads}), Config{})
		if err != nil {
			b.Fatal(err)
		}
		opts := p.DefaultOptions()
		b.Run(fmt.Sprintf("workers=%d/intra-op=%d", workers, threads), func(b *testing.B) {
			var next, busy atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			cpu0 := cpuTime()
			b.ResetTimer()
			for range workers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						if _, err := p.Detect(ctx, scene, vocab, opts); err != nil {
							errs <- err
							return
						}
						busy.Add(int64(time.Since(t0)))
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(busy.Load())/float64(b.N)/1e6, "latency-ms")
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
		p.Close()
	}
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
