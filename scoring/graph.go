package scoring

import (
	"context"
	_ "embed"
	"fmt"
	"sync"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/ort"
)

// probabilitiesONNX is Probabilities as one ONNX graph: two matrix products
// (of region embeddings already divided by τ), two log-softmaxes, the
// ensemble's weighted sum and exp. It is written by
// `python3 -m vildtrain kernel_graphs` (training/), and
// training/tests/test_kernel_graphs.py checks that the script still gives
// these bytes.
//
//go:embed probabilities.onnx
var probabilitiesONNX []byte

// The graph's input and output names.
const (
	graphText        = "text"
	graphImage       = "image"
	graphClasses     = "classes"
	graphBackground  = "background"
	graphTextWeight  = "text_weight"
	graphImageWeight = "image_weight"
	graphOutput      = "probabilities"
)

// Graph computes Probabilities on ONNX Runtime's kernels: the similarity
// matrices are SGEMMs there, against the scalar loops of the pure-Go path
// (docs/decisions/0024-scoring-on-onnx-runtime.md). One Graph is shared by
// all goroutines of a Model.
type Graph struct {
	s       ort.Session
	scratch sync.Pool // of *graphScratch: one run's input copies
}

// graphScratch holds a run's flattened embeddings and the heads' weights.
type graphScratch struct {
	text, image, textWeight, imageWeight []float32
}

// OpenGraph loads the embedded scoring graph into rt, whose thread settings
// it then uses.
func OpenGraph(rt ort.Runtime) (*Graph, error) {
	s, err := rt.NewSession("scoring/probabilities.onnx", probabilitiesONNX)
	if err != nil {
		return nil, fmt.Errorf("scoring: %w", err)
	}
	return &Graph{s: s}, nil
}

// Close releases the graph's session.
func (g *Graph) Close() error { return g.s.Close() }

// probabilities is Probabilities's arithmetic on the graph, into out
// ([N·K]), for inputs that Probabilities has checked. The head's embeddings
// that are not used (the image head's text ones, say) are replaced by the
// used ones with weight 0.
func (g *Graph) probabilities(m *Model, r *detector.Regions, p *Prepared, head detector.Head, out []float32) error {
	n, d, k := len(r.Boxes), p.dim, p.k
	sc, _ := g.scratch.Get().(*graphScratch)
	if sc == nil {
		sc = &graphScratch{}
	}
	defer g.scratch.Put(sc)
	textRows, imageRows := r.TextEmbeddings, r.ImageEmbeddings
	switch head {
	case detector.HeadText:
		imageRows = textRows
	case detector.HeadImage:
		textRows = imageRows
	}
	sc.text = scaled(sc.text, textRows, d, 1/m.Temperature)
	sc.image = scaled(sc.image, imageRows, d, 1/m.imageTau())
	background := m.Background
	if len(background) != d { // only the image head gets here with one
		background = make([]float32, d)
	}
	sc.textWeight, sc.imageWeight = resize(sc.textWeight, k), resize(sc.imageWeight, k)
	for c := range k {
		switch {
		case head == detector.HeadText:
			sc.textWeight[c], sc.imageWeight[c] = 1, 0
		case head == detector.HeadImage:
			sc.textWeight[c], sc.imageWeight[c] = 0, 1
		case p.base[c]:
			sc.textWeight[c], sc.imageWeight[c] = m.Lambda, 1-m.Lambda
		default:
			sc.textWeight[c], sc.imageWeight[c] = 1-m.Lambda, m.Lambda
		}
	}
	n64, d64, k64 := int64(n), int64(d), int64(k)
	inputs := map[string]ort.Tensor{
		graphText:        {Shape: []int64{n64, d64}, F32: sc.text},
		graphImage:       {Shape: []int64{n64, d64}, F32: sc.image},
		graphClasses:     {Shape: []int64{k64, d64}, F32: p.matrix},
		graphBackground:  {Shape: []int64{1, d64}, F32: background},
		graphTextWeight:  {Shape: []int64{k64}, F32: sc.textWeight},
		graphImageWeight: {Shape: []int64{k64}, F32: sc.imageWeight},
	}
	if into, ok := g.s.(ort.IntoRunner); ok {
		err := into.RunInto(context.Background(), inputs, map[string]ort.Tensor{graphOutput: {Shape: []int64{n64, k64}, F32: out}})
		if err != nil {
			return fmt.Errorf("scoring: %w", err)
		}
		return nil
	}
	res, err := g.s.Run(context.Background(), inputs)
	if err != nil {
		return fmt.Errorf("scoring: %w", err)
	}
	if probs := res[graphOutput].F32; len(probs) == len(out) {
		copy(out, probs)
		return nil
	}
	return fmt.Errorf("scoring: graph returned %v probabilities for %d regions × %d classes", res[graphOutput].Shape, n, k)
}

// scaled writes rows (each of length d) times s one after the other into
// dst, grown as needed, and returns it. The graph takes the region
// embeddings divided by τ: one multiply per [N, D] value here instead of a
// division per [N, K] similarity there.
func scaled(dst []float32, rows [][]float32, d int, s float32) []float32 {
	dst = resize(dst, len(rows)*d)
	for i, r := range rows {
		out := dst[i*d : (i+1)*d]
		for j, v := range r[:d] {
			out[j] = v * s
		}
	}
	return dst
}

// resize returns s with length n, reusing its array when it is large enough.
func resize(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}
