// Package handlerstest provides a small, real detector for tests of the HTTP
// layer and the web page without the neural model: ColorDetector finds blobs
// that differ from the background colour and classifies them by colour
// against ColorEmbedder's embeddings of colour names ("red", "blue", …).
package handlerstest

import (
	"context"
	"hash/fnv"
	"image"
	"math"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vild/vild/detector"
)

// Dim is the embedding dimension of the colour model.
const Dim = 3

var colors = map[string][3]float32{
	"red": {1, 0, 0}, "green": {0, 1, 0}, "blue": {0, 0, 1},
	"yellow": {1, 1, 0}, "cyan": {0, 1, 1}, "magenta": {1, 0, 1},
	"orange": {1, 0.5, 0}, "purple": {0.5, 0, 1}, "white": {1, 1, 1},
}

// ColorEmbedder embeds names by the first colour word they contain; other
// names get a stable pseudo-random direction.
type ColorEmbedder struct {
	Calls atomic.Int64 // names embedded so far
}

// Embed returns one unit vector per name.
func (e *ColorEmbedder) Embed(ctx context.Context, names []string) ([][]float32, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e.Calls.Add(int64(len(names)))
	out := make([][]float32, len(names))
	for i, n := range names {
		var v [3]float32
		found := false
		for _, w := range strings.Fields(strings.ToLower(n)) {
			if c, ok := colors[w]; ok {
				v, found = c, true
				break
			}
		}
		if !found {
			h := fnv.New32a()
			h.Write([]byte(n))
			s := h.Sum32()
			v = [3]float32{float32(s&0xff) - 128, float32(s>>8&0xff) - 128, float32(s>>16&0xff) - 128}
		}
		out[i] = unit(v[:])
	}
	return out, nil
}

func unit(v []float32) []float32 {
	var n float64
	for _, x := range v {
		n += float64(x) * float64(x)
	}
	n = math.Sqrt(n)
	out := make([]float32, len(v))
	for i, x := range v {
		if n > 0 {
			out[i] = float32(float64(x) / n)
		}
	}
	return out
}

// ColorDetector is a detector.Detector over colour blobs.
type ColorDetector struct {
	// Gate, when set, makes Regions wait for a value (or the context) first:
	// tests use it to hold requests on a worker.
	Gate chan struct{}
	// Started receives a value each time Regions starts (when set).
	Started chan struct{}
	// Delay is added to every Regions call (respecting the context).
	Delay time.Duration
	// Extra duplicates each region this many times with jittered boxes (dense scenes).
	Extra int

	RegionsCalls atomic.Int64
	ScoreCalls   atomic.Int64
}

var _ detector.Detector = (*ColorDetector)(nil)

// Regions finds connected blobs whose colour differs from the corners'.
func (d *ColorDetector) Regions(ctx context.Context, img image.Image) (*detector.Regions, error) {
	d.RegionsCalls.Add(1)
	if d.Started != nil {
		d.Started <- struct{}{}
	}
	start := time.Now()
	if d.Gate != nil {
		select {
		case <-d.Gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if d.Delay > 0 {
		t := time.NewTimer(d.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	step := max(1, max(w, h)/160)
	gw, gh := (w+step-1)/step, (h+step-1)/step
	px := func(gx, gy int) [3]float64 {
		r, g, bl, _ := img.At(b.Min.X+gx*step, b.Min.Y+gy*step).RGBA()
		return [3]float64{float64(r >> 8), float64(g >> 8), float64(bl >> 8)}
	}
	bg := px(0, 0)
	fg := make([]bool, gw*gh)
	for y := 0; y < gh; y++ {
		for x := 0; x < gw; x++ {
			p := px(x, y)
			dist := math.Abs(p[0]-bg[0]) + math.Abs(p[1]-bg[1]) + math.Abs(p[2]-bg[2])
			fg[y*gw+x] = dist > 90
		}
	}
	seen := make([]bool, gw*gh)
	out := &detector.Regions{Width: w, Height: h}
	for i := range fg {
		if !fg[i] || seen[i] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		x0, y0, x1, y1 := gw, gh, 0, 0
		var sum [3]float64
		n := 0
		stack := []int{i}
		seen[i] = true
		for len(stack) > 0 {
			j := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			x, y := j%gw, j/gw
			x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
			p := px(x, y)
			sum[0], sum[1], sum[2] = sum[0]+p[0], sum[1]+p[1], sum[2]+p[2]
			n++
			for _, nb := range [][2]int{{x - 1, y}, {x + 1, y}, {x, y - 1}, {x, y + 1}} {
				if nb[0] < 0 || nb[1] < 0 || nb[0] >= gw || nb[1] >= gh {
					continue
				}
				k := nb[1]*gw + nb[0]
				if fg[k] && !seen[k] {
					seen[k] = true
					stack = append(stack, k)
				}
			}
		}
		if n < 4 {
			continue
		}
		emb := unit([]float32{float32(sum[0] / float64(n)), float32(sum[1] / float64(n)), float32(sum[2] / float64(n))})
		box := [4]float32{float32(x0 * step), float32(y0 * step), float32(min(w, (x1+1)*step)), float32(min(h, (y1+1)*step))}
		for k := 0; k <= d.Extra; k++ {
			bx := box
			bx[0] += float32(k % 7)
			out.Boxes = append(out.Boxes, bx)
			out.TextEmbeddings = append(out.TextEmbeddings, emb)
			out.ImageEmbeddings = append(out.ImageEmbeddings, emb)
		}
	}
	out.Timings.Backbone = time.Since(start)
	return out, nil
}

// Score gives each region a softmax over the vocabulary (temperature 0.05),
// sums synonyms, drops negatives and low scores, sorts by score and caps.
func (d *ColorDetector) Score(ctx context.Context, r *detector.Regions, vocab *detector.Vocabulary, opts detector.Options) (*detector.Result, error) {
	d.ScoreCalls.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if vocab == nil || len(vocab.Classes) == 0 {
		return nil, detector.ErrEmptyVocabulary
	}
	for _, c := range vocab.Classes {
		if len(c.Embedding) != Dim {
			return nil, detector.ErrEmbeddingDim
		}
	}
	start := time.Now()
	// Like the pipeline's, the result carries the timings of the regions it scored.
	res := &detector.Result{Width: r.Width, Height: r.Height, Timings: r.Timings}
	for i, e := range r.TextEmbeddings {
		logits := make([]float64, len(vocab.Classes))
		mx := math.Inf(-1)
		for k, c := range vocab.Classes {
			var dot float64
			for j := range e {
				dot += float64(e[j]) * float64(c.Embedding[j])
			}
			logits[k] = dot / 0.05
			mx = math.Max(mx, logits[k])
		}
		var z float64
		for k := range logits {
			logits[k] = math.Exp(logits[k] - mx)
			z += logits[k]
		}
		byLabel := map[string]float64{}
		negative := map[string]bool{}
		thr := map[string]float32{}
		for k, c := range vocab.Classes {
			byLabel[c.Label] += logits[k] / z
			negative[c.Label] = negative[c.Label] || c.Negative
			if c.Threshold > 0 {
				thr[c.Label] = c.Threshold
			}
		}
		cands := make([]detector.Candidate, 0, len(byLabel))
		for l, p := range byLabel {
			cands = append(cands, detector.Candidate{Label: l, Score: float32(p)})
		}
		sort.Slice(cands, func(a, b int) bool {
			if cands[a].Score != cands[b].Score {
				return cands[a].Score > cands[b].Score
			}
			return cands[a].Label < cands[b].Label
		})
		if negative[cands[0].Label] {
			continue
		}
		// the region's LabelsPerBox best labels, each a detection of its own
		var own []detector.Candidate
		for _, c := range cands {
			if !negative[c.Label] {
				own = append(own, c)
			}
		}
		for j, c := range own[:min(len(own), max(opts.LabelsPerBox, 1))] {
			t := opts.ScoreThreshold
			if thr[c.Label] > 0 {
				t = thr[c.Label]
			}
			if c.Score < t {
				continue
			}
			det := detector.Detection{Label: c.Label, Score: c.Score, Box: r.Boxes[i]}
			for k, o := range own {
				if len(det.RunnersUp) == opts.RunnersUp {
					break
				}
				if k != j {
					det.RunnersUp = append(det.RunnersUp, o)
				}
			}
			res.Detections = append(res.Detections, det)
		}
	}
	sort.SliceStable(res.Detections, func(a, b int) bool { return res.Detections[a].Score > res.Detections[b].Score })
	if opts.MaxDetections > 0 && len(res.Detections) > opts.MaxDetections {
		res.Detections = res.Detections[:opts.MaxDetections]
	}
	res.Timings.Scoring = time.Since(start)
	return res, nil
}
