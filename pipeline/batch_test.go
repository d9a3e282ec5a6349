package pipeline

// The batched-backbone exploration (training/experiments/batch/README.md):
// a copy of the bundle whose backbone graph takes [N, 3, H, W]. Everything
// here skips unless $BATCH_BUNDLE names such a bundle:
//
//	BATCH_BUNDLE=/tmp/batch-bundle go test -run 'TestBatch' -v ./pipeline
//	BATCH_BUNDLE=/tmp/batch-bundle go test -run '^$' -bench BenchmarkBatchBackbone -benchtime 3x -count 5 ./pipeline

import (
	"context"
	"fmt"
	"image"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/eval"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/ort"
)

// heldoutDir holds the held-out scenes the exploration measures on.
const heldoutDir = "training/runs/heldout/seen"

// envBundle opens the bundle the environment variable name points at; the
// exploration tests that need one skip when it is unset.
func envBundle(tb testing.TB, name string) *bundle.Bundle {
	tb.Helper()
	dir := os.Getenv(name)
	if dir == "" {
		tb.Skip(name + " unset")
	}
	bun, err := bundle.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return bun
}

// openBatch opens the pipeline on $BATCH_BUNDLE at the given intra-op threads.
func openBatch(tb testing.TB, threads int) (*Pipeline, *bundle.Bundle) {
	tb.Helper()
	bun := envBundle(tb, "BATCH_BUNDLE")
	p, err := Open(bun, testbundle.Runtime(tb, ort.Config{IntraOpThreads: threads}), Config{Workers: 1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	if in := p.backbone.Inputs()[0]; in.Shape[0] >= 0 {
		tb.Fatalf("%s: backbone input %v has a fixed batch dimension", os.Getenv("BATCH_BUNDLE"), in)
	}
	return p, bun
}

// heldout reads the first n held-out scenes and their annotations.
func heldout(tb testing.TB, n int) ([]image.Image, *eval.COCO) {
	tb.Helper()
	root := filepath.Join(testbundle.Root(tb), heldoutDir)
	gt, err := eval.ReadCOCOFile(filepath.Join(root, "annotations.json"))
	if err != nil {
		tb.Skipf("no held-out scenes: %v", err)
	}
	gt.Images = gt.Images[:min(n, len(gt.Images))]
	var imgs []image.Image
	for _, im := range gt.Images {
		data, err := os.ReadFile(filepath.Join(root, "images", im.FileName))
		if err != nil {
			tb.Fatal(err)
		}
		img, err := imageio.Decode(data, imageio.Limits{})
		if err != nil {
			tb.Fatal(err)
		}
		imgs = append(imgs, img.Image)
	}
	return imgs, gt
}

// stack concatenates same-shape [1, 3, H, W] tensors into one [N, 3, H, W].
func stack(tb testing.TB, xs []ort.Tensor) ort.Tensor {
	tb.Helper()
	shape := append([]int64{int64(len(xs))}, xs[0].Shape[1:]...)
	out := make([]float32, 0, len(xs)*len(xs[0].F32))
	for _, x := range xs {
		if fmt.Sprint(x.Shape) != fmt.Sprint(xs[0].Shape) {
			tb.Fatalf("stack: shapes %v and %v", x.Shape, xs[0].Shape)
		}
		out = append(out, x.F32...)
	}
	return ort.Tensor{Shape: shape, F32: out}
}

// item is element i of a batched output [N, ...] as a [1, ...] tensor.
func item(t ort.Tensor, i int) ort.Tensor {
	n := len(t.F32) / int(t.Shape[0])
	return ort.Tensor{Shape: append([]int64{1}, t.Shape[1:]...), F32: t.F32[i*n : (i+1)*n]}
}

// padTo zero-pads a [1, 3, h, w] tensor to [1, 3, H, W] at the bottom and
// right, as Preprocess pads and as batching images of different sizes would.
func padTo(x ort.Tensor, hp, wp int) ort.Tensor {
	h, w := int(x.Shape[2]), int(x.Shape[3])
	out := make([]float32, 3*hp*wp)
	for c := range 3 {
		for y := range h {
			copy(out[(c*hp+y)*wp:(c*hp+y)*wp+w], x.F32[(c*h+y)*w:(c*h+y+1)*w])
		}
	}
	return ort.Tensor{Shape: []int64{1, 3, int64(hp), int64(wp)}, F32: out}
}

func preprocessAll(tb testing.TB, p *Pipeline, imgs []image.Image) ([]ort.Tensor, []imageio.Resize) {
	tb.Helper()
	var xs []ort.Tensor
	var rs []imageio.Resize
	for _, img := range imgs {
		data, shape, r, err := imageio.Preprocess(img, p.prep)
		if err != nil {
			tb.Fatal(err)
		}
		xs = append(xs, ort.Tensor{Shape: shape[:], F32: data})
		rs = append(rs, r)
	}
	return xs, rs
}

// TestBatchBackboneParity: the batched graph run on N same-size images gives
// each image's batch-1 outputs (to float rounding: ORT may block a batch's
// convolutions differently), and at batch 1 it gives exactly what the
// shipped graph gives.
func TestBatchBackboneParity(t *testing.T) {
	p, _ := openBatch(t, 1)
	def, _ := openDefault(t)
	imgs, _ := heldout(t, 8)
	xs, _ := preprocessAll(t, p, imgs)
	ctx := context.Background()
	single := make([]map[string]ort.Tensor, len(xs))
	for i, x := range xs {
		out, err := p.backbone.Run(ctx, map[string]ort.Tensor{InputImage: x})
		if err != nil {
			t.Fatal(err)
		}
		single[i] = out
		ref, err := def.backbone.Run(ctx, map[string]ort.Tensor{InputImage: x})
		if err != nil {
			t.Fatal(err)
		}
		for name, v := range ref {
			if d, _ := testbundle.MaxAbsDiff(out[name].F32, v.F32); d != 0 {
				t.Errorf("image %d %s: batch-axis graph at batch 1 differs from the shipped graph by %g", i, name, d)
			}
		}
	}
	for _, n := range []int{2, 4, 8} {
		out, err := p.backbone.Run(ctx, map[string]ort.Tensor{InputImage: stack(t, xs[:n])})
		if err != nil {
			t.Fatal(err)
		}
		var worst, scale float64
		worstName := ""
		for name, v := range out {
			if v.Shape[0] != int64(n) {
				t.Fatalf("N=%d: %s has shape %v", n, name, v.Shape)
			}
			for i := range n {
				d, _ := testbundle.MaxAbsDiff(item(v, i).F32, single[i][name].F32)
				if d > worst {
					worst, worstName = d, name
				}
				for _, a := range single[i][name].F32 {
					scale = math.Max(scale, math.Abs(float64(a)))
				}
			}
		}
		t.Logf("N=%d: largest |batch - single| %g (%s), largest |output| %g", n, worst, worstName, scale)
		if worst > 1e-5*scale {
			t.Errorf("N=%d: batch outputs differ from single-image outputs by %g (scale %g)", n, worst, scale)
		}
	}
}

// TestBatchPaddingEffect measures what batching images of different padded
// sizes would change: every image padded to the batch's largest size, as
// torchvision batches. The held-out scenes are 384×384, so each is cropped to
// a landscape (384×232, padded 384×256) or portrait (232×384) image; the
// reference pads it to its own size, the batched variant to 384×384 (what a
// batch with one square or one opposite-orientation image needs). Same-size
// batches are exact (TestBatchBackboneParity), so the batched variant runs at
// batch 1 on the larger tensor. Reports AP50 against the cropped ground
// truth (boxes keeping at least half their area) for both, and the largest
// score and box change of the detections.
func TestBatchPaddingEffect(t *testing.T) {
	p, bun := openBatch(t, 2)
	n := 100
	if s := os.Getenv("BATCH_PAD_IMAGES"); s != "" {
		fmt.Sscan(s, &n)
	}
	imgs, gt := heldout(t, n)
	vocab := categoryVocabulary(t, bun)
	ids := map[string]int64{}
	for _, c := range gt.Categories {
		ids[c.Name] = c.ID
	}
	opts := p.DefaultOptions()
	ctx := context.Background()
	crop := &eval.COCO{Categories: gt.Categories}
	byImage := map[int64][]eval.Annotation{}
	for _, a := range gt.Annotations {
		byImage[a.ImageID] = append(byImage[a.ImageID], a)
	}
	var own, padded []eval.ImageDetections
	var dFeat, dFeatInner, lostScore float64
	// [all, score ≥ 0.3]: detections, without partner, max |Δscore|, max |Δbox|
	var total, unmatched [2]int
	var dScore, dBox [2]float64
	for k, img := range imgs {
		im := gt.Images[k]
		w, h := 384, 232
		if k%2 == 1 {
			w, h = 232, 384
		}
		sub := img.(interface {
			SubImage(image.Rectangle) image.Image
		}).SubImage(image.Rect(0, 0, w, h))
		crop.Images = append(crop.Images, eval.Image{ID: im.ID, FileName: im.FileName, Width: w, Height: h})
		for _, a := range byImage[im.ID] {
			x1, y1 := a.BBox[0], a.BBox[1]
			x2, y2 := math.Min(x1+a.BBox[2], float64(w)), math.Min(y1+a.BBox[3], float64(h))
			if x2 <= x1 || y2 <= y1 || (x2-x1)*(y2-y1) < 0.5*a.BBox[2]*a.BBox[3] {
				continue
			}
			a.BBox = [4]float64{x1, y1, x2 - x1, y2 - y1}
			crop.Annotations = append(crop.Annotations, a)
		}
		data, shape, r, err := imageio.Preprocess(sub, p.prep)
		if err != nil {
			t.Fatal(err)
		}
		x := ort.Tensor{Shape: shape[:], F32: data}
		rBig := r
		rBig.PaddedWidth, rBig.PaddedHeight = 384, 384
		var results [2]*detector.Result
		var traces [2]*Trace
		for v, in := range []struct {
			x ort.Tensor
			r imageio.Resize
		}{{x, r}, {padTo(x, 384, 384), rBig}} {
			tr, err := p.Run(ctx, in.x, in.r)
			if err != nil {
				t.Fatal(err)
			}
			res, err := p.Score(ctx, tr.Regions, vocab, opts)
			if err != nil {
				t.Fatal(err)
			}
			results[v], traces[v] = res, tr
			d := eval.ImageDetections{ImageID: im.ID}
			for _, x := range res.Detections {
				d.Detections = append(d.Detections, eval.Detection{CategoryID: ids[x.Label], BBox: eval.BoxFromCorners(x.Box), Score: float64(x.Score)})
			}
			if v == 0 {
				own = append(own, d)
			} else {
				padded = append(padded, d)
			}
		}
		// p2 features over the image's own padded extent, and away from
		// its padded border by 32 px (8 cells)
		f0, f1 := traces[0].Backbone["feat_p2"], traces[1].Backbone["feat_p2"]
		h0, w0, w1 := int(f0.Shape[2]), int(f0.Shape[3]), int(f1.Shape[3])
		for c := range int(f0.Shape[1]) {
			for y := range h0 {
				for xx := range w0 {
					d := math.Abs(float64(f0.F32[(c*h0+y)*w0+xx] - f1.F32[(c*int(f1.Shape[2])+y)*w1+xx]))
					dFeat = math.Max(dFeat, d)
					if y < h0-8 && xx < w0-8 {
						dFeatInner = math.Max(dFeatInner, d)
					}
				}
			}
		}
		// each reference detection against its best same-label partner
		for _, a := range results[0].Detections {
			best, bi := 0.0, -1
			for j, b := range results[1].Detections {
				if b.Label != a.Label {
					continue
				}
				if iou := boxIoU(a.Box, b.Box); iou > best {
					best, bi = iou, j
				}
			}
			for g := range 2 {
				if g == 1 && a.Score < 0.3 {
					continue
				}
				total[g]++
				if best < 0.5 {
					unmatched[g]++
					lostScore = math.Max(lostScore, float64(a.Score))
					continue
				}
				b := results[1].Detections[bi]
				dScore[g] = math.Max(dScore[g], math.Abs(float64(a.Score-b.Score)))
				for i := range 4 {
					dBox[g] = math.Max(dBox[g], math.Abs(float64(a.Box[i]-b.Box[i])))
				}
			}
		}
	}
	ap0 := eval.Evaluate(crop, own).Summary.All.AP50
	ap1 := eval.Evaluate(crop, padded).Summary.All.AP50
	t.Logf("%d cropped scenes, %d ground-truth boxes: AP50 own padding %.4f, padded to 384x384 %.4f (Δ %+.4f)",
		len(imgs), len(crop.Annotations), ap0, ap1, ap1-ap0)
	t.Logf("feat_p2 max |Δ| %.4g over the image's own extent, %.4g more than 32 px from its padded border",
		dFeat, dFeatInner)
	for g, what := range []string{"all detections", "detections scoring ≥ 0.3"} {
		t.Logf("%s: %d, %d without a same-label partner at IoU 0.5; matched: max |Δscore| %.4f, max |Δbox| %.2f px",
			what, total[g], unmatched[g], dScore[g], dBox[g])
	}
	t.Logf("highest score of a detection without a partner: %.4f", lostScore)
}

func boxIoU(a, b [4]float32) float64 {
	iw := math.Min(float64(a[2]), float64(b[2])) - math.Max(float64(a[0]), float64(b[0]))
	ih := math.Min(float64(a[3]), float64(b[3])) - math.Max(float64(a[1]), float64(b[1]))
	if iw <= 0 || ih <= 0 {
		return 0
	}
	inter := iw * ih
	area := func(x [4]float32) float64 { return float64(x[2]-x[0]) * float64(x[3]-x[1]) }
	return inter / (area(a) + area(b) - inter)
}

// BenchmarkBatchBackbone: the backbone graph on N held-out scenes (384×384)
// as one [N, 3, 384, 384] run against N runs of [1, 3, 384, 384], at 1 and 2
// intra-op threads. Each iteration runs both variants, alternating which
// goes first, so load on a shared machine slows both alike; it reports their
// mean wall times, the ratio batch/sequential, and the same ratio of the
// process's CPU time (ORT's pool threads spin while they wait, so CPU time
// counts the synchronisation a batch saves as well as the arithmetic).
func BenchmarkBatchBackbone(b *testing.B) {
	imgs, _ := heldout(b, 8)
	ctx := context.Background()
	for _, threads := range []int{1, 2} {
		p, _ := openBatch(b, threads)
		xs, _ := preprocessAll(b, p, imgs)
		if _, err := p.backbone.Run(ctx, map[string]ort.Tensor{InputImage: stack(b, xs)}); err != nil {
			b.Fatal(err) // warm the batch-8 shapes
		}
		for _, n := range []int{2, 4, 8} {
			batch := map[string]ort.Tensor{InputImage: stack(b, xs[:n])}
			variants := [2]func() error{
				func() error { _, err := p.backbone.Run(ctx, batch); return err },
				func() error {
					for _, x := range xs[:n] {
						if _, err := p.backbone.Run(ctx, map[string]ort.Tensor{InputImage: x}); err != nil {
							return err
						}
					}
					return nil
				},
			}
			b.Run(fmt.Sprintf("threads=%d/N=%d", threads, n), func(b *testing.B) {
				var spent, cpu [2]time.Duration
				it := 0
				for b.Loop() {
					for k := range 2 {
						v := (k + it) % 2
						t0, c0 := time.Now(), cpuTime()
						if err := variants[v](); err != nil {
							b.Fatal(err)
						}
						spent[v] += time.Since(t0)
						cpu[v] += cpuTime() - c0
					}
					it++
				}
				b.ReportMetric(float64(spent[0])/float64(b.N)/1e6, "batch-ms")
				b.ReportMetric(float64(spent[1])/float64(b.N)/1e6, "seq-ms")
				b.ReportMetric(float64(spent[0])/float64(spent[1]), "batch/seq")
				b.ReportMetric(float64(cpu[0])/float64(cpu[1]), "cpu-batch/seq")
			})
		}
	}
}
