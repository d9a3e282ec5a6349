package pipeline

// The int8 exploration (training/experiments/int8/README.md): activation
// ranges for calibration, and the int8 bundle's speed against fp32. Both
// skip unless their environment variables name the bundles:
//
//	INT8_FP32=DIR INT8_CALIB_MODEL=... INT8_CALIB_LIST=... \
//	INT8_CALIB_IMAGES=dir INT8_CALIB_OUT=ranges.json go test -run TestInt8Calib ./pipeline
//	INT8_FP32=DIR INT8_INT8=DIR go test -run '^$' -bench BenchmarkInt8 ./pipeline

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/ort"
)

func TestInt8Calib(t *testing.T) {
	bun := envBundle(t, "INT8_FP32")
	rt, err := ort.Open(ort.Config{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	p, err := Open(bun, rt, Config{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	model, err := os.ReadFile(os.Getenv("INT8_CALIB_MODEL"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := rt.NewSession("calib", model)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var names []string
	raw, _ := os.ReadFile(os.Getenv("INT8_CALIB_LIST"))
	if err := json.Unmarshal(raw, &names); err != nil {
		t.Fatal(err)
	}
	type rng struct {
		Min, Max         float64
		MeanMin, MeanMax float64
		N                int
	}
	ranges := map[string]*rng{}
	files, _ := filepath.Glob(filepath.Join(os.Getenv("INT8_CALIB_IMAGES"), "*.png"))
	slices.Sort(files)
	for _, f := range files {
		data, _ := os.ReadFile(f)
		img, err := imageio.Decode(data, imageio.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		x, shape, _, err := imageio.Preprocess(img.Image, p.prep)
		if err != nil {
			t.Fatal(err)
		}
		out, err := s.Run(context.Background(), map[string]ort.Tensor{InputImage: {Shape: shape[:], F32: x}})
		if err != nil {
			t.Fatal(err)
		}
		out["image"] = ort.Tensor{Shape: shape[:], F32: x}
		for _, n := range names {
			v, ok := out[n]
			if !ok {
				t.Fatalf("no output %s", n)
			}
			lo, hi := math.Inf(1), math.Inf(-1)
			for _, a := range v.F32 {
				lo = math.Min(lo, float64(a))
				hi = math.Max(hi, float64(a))
			}
			r := ranges[n]
			if r == nil {
				r = &rng{Min: lo, Max: hi}
				ranges[n] = r
			}
			r.Min, r.Max = math.Min(r.Min, lo), math.Max(r.Max, hi)
			r.MeanMin += lo
			r.MeanMax += hi
			r.N++
		}
	}
	for _, r := range ranges {
		r.MeanMin /= float64(r.N)
		r.MeanMax /= float64(r.N)
	}
	js, _ := json.MarshalIndent(ranges, "", " ")
	if err := os.WriteFile(os.Getenv("INT8_CALIB_OUT"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d images, %d tensors", len(files), len(ranges))
}

// BenchmarkInt8 compares the fp32 bundle ($INT8_FP32) with its int8 copy
// ($INT8_INT8) at one intra-op thread: each iteration runs the stage on
// both, one after the other, so load on a shared machine slows both alike;
// it reports their mean times and the ratio int8/fp32 (the backbone graph
// alone, and a detection with every category).
func BenchmarkInt8(b *testing.B) {
	dirs := []string{os.Getenv("INT8_FP32"), os.Getenv("INT8_INT8")}
	if dirs[0] == "" || dirs[1] == "" {
		b.Skip("INT8_FP32/INT8_INT8 unset")
	}
	ctx := context.Background()
	var ps []*Pipeline
	for _, d := range dirs {
		bun, err := bundle.Open(d)
		if err != nil {
			b.Fatal(err)
		}
		rt, err := ort.Open(ort.Config{IntraOpThreads: 1})
		if err != nil {
			b.Fatal(err)
		}
		defer rt.Close()
		p, err := Open(bun, rt, Config{Workers: 1})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		ps = append(ps, p)
	}
	bun0, err := bundle.Open(dirs[0])
	if err != nil {
		b.Fatal(err)
	}
	img := defaultScene(b, bun0)
	vocab := categoryVocabulary(b, bun0)
	data, shape, _, err := imageio.Preprocess(img, ps[0].prep)
	if err != nil {
		b.Fatal(err)
	}
	in := map[string]ort.Tensor{InputImage: {Shape: shape[:], F32: data}}
	o0, err := ps[0].backbone.Run(ctx, in)
	if err != nil {
		b.Fatal(err)
	}
	o1, err := ps[1].backbone.Run(ctx, in)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []string{"feat_p2", "feat_p5", "rpn_logits_p2", "rpn_logits_p4"} {
		var d, sc float64
		for i := range o0[n].F32 {
			d = math.Max(d, math.Abs(float64(o0[n].F32[i]-o1[n].F32[i])))
			sc = math.Max(sc, math.Abs(float64(o0[n].F32[i])))
		}
		b.Logf("%s: max |int8-fp32| %.4g (max |fp32| %.4g)", n, d, sc)
	}
	opts := ps[0].DefaultOptions()
	for _, st := range []struct {
		name string
		f    func(p *Pipeline) error
	}{
		{"backbone", func(p *Pipeline) error { _, err := p.backbone.Run(ctx, in); return err }},
		{"detect", func(p *Pipeline) error { _, err := p.Detect(ctx, img, vocab, opts); return err }},
	} {
		b.Run(st.name, func(b *testing.B) {
			var spent [2]time.Duration
			for b.Loop() {
				for k, p := range ps {
					t0 := time.Now()
					if err := st.f(p); err != nil {
						b.Fatal(err)
					}
					spent[k] += time.Since(t0)
				}
			}
			b.ReportMetric(float64(spent[0])/float64(b.N)/1e6, "fp32-ms")
			b.ReportMetric(float64(spent[1])/float64(b.N)/1e6, "int8-ms")
			b.ReportMetric(float64(spent[1])/float64(spent[0]), "int8/fp32")
		})
	}
}
