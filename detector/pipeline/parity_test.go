package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"math"
	"path"
	"strings"
	"testing"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/rpn"
)

// Tolerances of docs/bundle.md ("Golden outputs").
const (
	tolGraph    = 1e-4
	tolAnchor   = 1e-6
	tolProposal = 1e-3
	tolScore    = 1e-5
	tolBox      = 1e-3
	tolDetScore = 1e-4
	tolDetBox   = 1e-2
	tolPreproc  = 1e-4
)

type goldenMeta struct {
	Width         int     `json:"width"`
	Height        int     `json:"height"`
	ResizedWidth  int     `json:"resized_width"`
	ResizedHeight int     `json:"resized_height"`
	PaddedWidth   int     `json:"padded_width"`
	PaddedHeight  int     `json:"padded_height"`
	ScaleX        float64 `json:"scale_x"`
	ScaleY        float64 `json:"scale_y"`
}

func (m goldenMeta) resize() imageio.Resize {
	return imageio.Resize{Width: m.Width, Height: m.Height, ResizedWidth: m.ResizedWidth, ResizedHeight: m.ResizedHeight,
		PaddedWidth: m.PaddedWidth, PaddedHeight: m.PaddedHeight, ScaleX: m.ScaleX, ScaleY: m.ScaleY}
}

type goldenDetection struct {
	Label string     `json:"label"`
	Score float32    `json:"score"`
	Box   [4]float32 `json:"box"`
}

func readJSON(t *testing.T, b *bundle.Bundle, name string, v any) {
	t.Helper()
	raw, err := b.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func within(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, golden %d", what, len(got), len(want))
		return
	}
	if d, at := testbundle.MaxAbsDiff(got, want); d > tol {
		t.Errorf("%s: max abs diff %.3g at %d (got %v, golden %v), tolerance %g", what, d, at, got[at], want[at], tol)
	}
}

func flatBoxes(bs [][4]float32) []float32 {
	out := make([]float32, 0, 4*len(bs))
	for _, b := range bs {
		out = append(out, b[:]...)
	}
	return out
}

// categoryVocabulary is the golden detections' vocabulary: one class per
// manifest category, embedded by category_embeddings.npy.
func categoryVocabulary(t *testing.T, b *bundle.Bundle) *detector.Vocabulary {
	t.Helper()
	emb, err := b.CategoryEmbeddings()
	if err != nil {
		t.Fatal(err)
	}
	v := &detector.Vocabulary{}
	for i, c := range b.Manifest.Categories {
		v.Classes = append(v.Classes, detector.Class{Label: c.Name, Text: c.Name, Embedding: emb[i], Base: c.Split == "base"})
	}
	return v
}

func compareDetections(t *testing.T, what string, got []detector.Detection, want []goldenDetection) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d detections, golden %d", what, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		if g.Label != w.Label || math.Abs(float64(g.Score-w.Score)) > tolDetScore {
			t.Errorf("%s: detection %d is %s %.6f, golden %s %.6f", what, i, g.Label, g.Score, w.Label, w.Score)
			continue
		}
		if d, _ := testbundle.MaxAbsDiff(g.Box[:], w.Box[:]); d > tolDetBox {
			t.Errorf("%s: detection %d box %v, golden %v", what, i, g.Box, w.Box)
		}
	}
}

// TestGoldenParity is the harness every bundle must pass (the fixture always,
// the default bundle when present): each graph under ONNX Runtime, each Go
// stage, and the whole pipeline against the exporter's PyTorch numbers.
func TestGoldenParity(t *testing.T) {
	rt := testbundle.Runtime(t, ort.Config{})
	for _, b := range testbundle.All(t) {
		t.Run(b.Manifest.Name, func(t *testing.T) {
			p, err := Open(b, rt, Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			cases, err := b.GoldenCases()
			if err != nil {
				t.Fatal(err)
			}
			ran := 0
			for _, dir := range cases {
				if _, err := b.ReadFile(path.Join(dir, "meta.json")); err != nil {
					continue // golden/text and other non-image cases
				}
				ran++
				t.Run(path.Base(dir), func(t *testing.T) { goldenCase(t, p, b, dir) })
			}
			if ran == 0 {
				t.Fatal("bundle has no golden image cases")
			}
		})
	}
}

func goldenCase(t *testing.T, p *Pipeline, b *bundle.Bundle, dir string) {
	m := b.Manifest
	ctx := context.Background()
	arr := func(name string) *bundle.Array { return testbundle.Array(t, b, path.Join(dir, name)) }
	var meta goldenMeta
	readJSON(t, b, path.Join(dir, "meta.json"), &meta)
	var wantDets []goldenDetection
	readJSON(t, b, path.Join(dir, "detections.json"), &wantDets)
	image := arr("image.npy")

	// Preprocessing of the original image.
	raw, err := b.ReadFile(path.Join(dir, "input.png"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	data, shape, resize, err := imageio.Preprocess(img, p.prep)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(shape[:]) != fmt.Sprint(image.Shape) || resize != meta.resize() {
		t.Fatalf("preprocess: shape %v %+v, golden %v %+v", shape, resize, image.Shape, meta.resize())
	}
	within(t, "preprocess", data, image.F32, tolPreproc)

	// Every stage, from the golden input tensor.
	shape64 := make([]int64, len(image.Shape))
	for i, d := range image.Shape {
		shape64[i] = int64(d)
	}
	tr, err := p.Run(ctx, ort.Tensor{Shape: shape64, F32: image.F32}, meta.resize())
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range p.backbone.Outputs() {
		within(t, "backbone "+out.Name, tr.Backbone[out.Name].F32, arr(out.Name+".npy").F32, tolGraph)
	}
	for _, l := range p.rpnLevels {
		logits := tr.Backbone["rpn_logits_"+l.Name]
		h, w := int(logits.Shape[2]), int(logits.Shape[3])
		sy, sx := rpn.Strides(h, w, meta.PaddedHeight, meta.PaddedWidth)
		anchors := rpn.Anchors(rpn.CellAnchors(l.AnchorSizes, m.Anchors.AspectRatios), h, w, sy, sx)
		within(t, "anchors "+l.Name, flatBoxes(anchors), arr("anchors_"+l.Name+".npy").F32, tolAnchor)
	}
	within(t, "proposals", flatBoxes(tr.Proposals.Boxes), arr("proposals.npy").F32, tolProposal)
	within(t, "proposal scores", tr.Proposals.Scores, arr("proposal_scores.npy").F32, tolScore)
	if t.Failed() {
		return // later stages depend on identical proposals
	}
	rois := arr("rois.npy")
	within(t, "rois", tr.RoIs[:len(rois.F32)], rois.F32, tolGraph)
	for _, name := range []string{OutputTextEmbeddings, OutputImageEmbeddings, OutputBoxDeltas} {
		within(t, "box head "+name, tr.BoxHead[name].F32, arr(name+".npy").F32, tolGraph)
	}
	within(t, "refined boxes", flatBoxes(tr.Regions.Boxes), arr("boxes.npy").F32, tolBox)

	// The box head graph alone on the golden pooled features.
	n := rois.Shape[0]
	head, err := p.boxHead.Run(ctx, map[string]ort.Tensor{InputRoIs: {Shape: []int64{int64(n), int64(rois.Shape[1]), int64(rois.Shape[2]), int64(rois.Shape[3])}, F32: rois.F32}})
	if err != nil {
		t.Fatal(err)
	}
	d := m.Embedding.Dim
	within(t, "box head graph on golden rois", head[OutputTextEmbeddings].F32, arr(OutputTextEmbeddings + ".npy").F32[:n*d], tolGraph)

	// Detections, from the tensor and end to end from the image.
	vocab := categoryVocabulary(t, b)
	res, err := p.Score(ctx, tr.Regions, vocab, p.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	compareDetections(t, "detections", res.Detections, wantDets)
	res, err = p.Detect(ctx, img, vocab, p.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	compareDetections(t, "end to end", res.Detections, wantDets)
	if res.Width != meta.Width || res.Height != meta.Height {
		t.Errorf("result size %dx%d, image %dx%d", res.Width, res.Height, meta.Width, meta.Height)
	}
	if tm := res.Timings; tm.Backbone <= 0 || tm.BoxHead <= 0 || tm.Scoring <= 0 {
		t.Errorf("stage timings missing: %+v", tm)
	}
}

func TestOpenRejectsMismatchedGraphs(t *testing.T) {
	rt := testbundle.Runtime(t, ort.Config{})
	b := testbundle.Fixture(t)
	// The text encoder in the backbone's place: wrong input name.
	text, err := b.ReadFile(bundle.TextEncoderFile)
	if err != nil {
		t.Fatal(err)
	}
	s, err := rt.NewSession(bundle.TextEncoderFile, text)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bg, _ := b.Background()
	if _, err := New(b.Manifest, bg, s, s, Config{}); err == nil || !strings.Contains(err.Error(), `no input "image"`) {
		t.Errorf("wrong graph: %v", err)
	}
	// A manifest whose channels differ from the graphs'.
	m := *b.Manifest
	m.FPN.Channels++
	backbone, _ := b.ReadFile(bundle.BackboneFile)
	bs, err := rt.NewSession(bundle.BackboneFile, backbone)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	if _, err := New(&m, bg, bs, s, Config{}); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Errorf("channel mismatch: %v", err)
	}
}
