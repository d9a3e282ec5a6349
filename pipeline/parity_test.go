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

	"github.com/vild/vild/boxes"
	"github.com/vild/vild/bundle"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/roialign"
	"github.com/vild/vild/rpn"
)

// Tolerances of docs/bundle.md ("Golden outputs"). Every stage is checked on
// the golden inputs of that stage, so the stage tolerances are tight; only the
// end-to-end check chains the stages, and it matches rather than compares.
const (
	tolGraph    = 1e-4 // a graph under ONNX Runtime vs PyTorch
	tolPreproc  = 1e-4 // input.png → image.npy
	tolAnchor   = 1e-6
	tolProposal = 1e-3 // px, rpn.Propose on the golden head outputs
	tolScore    = 1e-5 // sigmoid objectness
	tolRoI      = 1e-5 // pooled features from the golden features and proposals
	tolBox      = 1e-3 // px, box decode of the golden deltas
	tolDetScore = 1e-4 // scoring of the golden embeddings and boxes
	tolDetBox   = 1e-2 // px

	// End to end (input.png through ONNX Runtime and every Go stage) vs the
	// golden detections and proposals.
	chainMinScore     = 0.3  // golden/Go detections at or above this must be matched
	chainIoU          = 0.9  // a match has the same label and at least this IoU
	chainScore        = 0.05 // and a score within this
	chainTopProposals = 100  // the golden top proposals that must all be matched
	chainPropRecall   = 0.95 // the fraction of all golden proposals that must be matched
	chainPropIoU      = 0.99 // a proposal match has at least this IoU
	chainPropScore    = 1e-3 // and objectness within this
	chainEmbedding    = 1e-3 // regions of matched proposals: embeddings within this
	chainBox          = 1e-1 // and refined boxes within this (px)
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
	d, at := testbundle.MaxAbsDiff(got, want)
	t.Logf("%s: max abs diff %.3g (tolerance %g)", what, d, tol)
	if d > tol {
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

func flatRows(rows [][]float32) []float32 {
	var out []float32
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}

// categoryVocabulary is the golden detections' vocabulary: one class per
// manifest category, embedded by category_embeddings.npy.
func categoryVocabulary(t testing.TB, b *bundle.Bundle) *detector.Vocabulary {
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

// scored is a box with a label and a score, from either side of a matching.
type scored struct {
	label string
	score float32
	box   [4]float32
}

// match pairs every item of from scoring at least minScore with a distinct
// item of to: same label, IoU ≥ minIoU and |score difference| ≤ scoreTol,
// taking the highest IoU, greedily in from's (descending) order. Items of to
// may score down to minScore − scoreTol, so an item just over the line on one
// side and just under on the other still pairs. It returns each item's partner
// in to (-1 for none), how many items were required, and a description of
// each required item left without a partner.
func match(from, to []scored, minScore, minIoU, scoreTol float32) (partner []int, required int, missing []string) {
	used := make([]bool, len(to))
	partner = make([]int, len(from))
	for i, f := range from {
		partner[i] = -1
		if f.score < minScore {
			continue
		}
		required++
		bestIoU := float32(0)
		for j, c := range to {
			if used[j] || c.label != f.label || c.score < minScore-scoreTol ||
				math.Abs(float64(c.score-f.score)) > float64(scoreTol) {
				continue
			}
			if iou := boxes.IoU(f.box, c.box); iou >= minIoU && iou > bestIoU {
				partner[i], bestIoU = j, iou
			}
		}
		if partner[i] < 0 {
			missing = append(missing, fmt.Sprintf("%d %s %.4f %v", i, f.label, f.score, f.box))
			continue
		}
		used[partner[i]] = true
	}
	return partner, required, missing
}

// matchBothWays requires every item of golden and of got at or above minScore
// to be matched on the other side, and logs the counts.
func matchBothWays(t *testing.T, what string, golden, got []scored, minScore, minIoU, scoreTol float32) {
	t.Helper()
	_, nw, missW := match(golden, got, minScore, minIoU, scoreTol)
	_, ng, missG := match(got, golden, minScore, minIoU, scoreTol)
	t.Logf("%s: %d/%d golden matched by Go, %d/%d Go matched by golden (score ≥ %g, IoU ≥ %g, score ±%g)",
		what, nw-len(missW), nw, ng-len(missG), ng, minScore, minIoU, scoreTol)
	for _, m := range missW {
		t.Errorf("%s: golden %s has no Go match", what, m)
	}
	for _, m := range missG {
		t.Errorf("%s: Go %s has no golden match", what, m)
	}
}

// TestGoldenParity is the harness every bundle must pass (the fixture always,
// the default bundle when present, and $VILD_TEST_BUNDLES): each graph under
// ONNX Runtime and each Go stage on the golden inputs of that stage, against
// the exporter's PyTorch numbers with tight tolerances; then the whole chain
// from input.png, whose small ONNX Runtime differences may legitimately
// reorder near-tied proposals, by matching detections and proposals.
func TestGoldenParity(t *testing.T) {
	rt := testbundle.Runtime(t, ort.Config{})
	for _, b := range testbundle.All(t) {
		t.Run(b.Manifest.Name, func(t *testing.T) {
			t.Logf("bundle %s", b.Source)
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
	resize := meta.resize()
	var wantDets []goldenDetection
	readJSON(t, b, path.Join(dir, "detections.json"), &wantDets)
	image := arr("image.npy")
	proposals := arr("proposals.npy")
	goldenProps := bundle.Rows(proposals.F32, 4)
	goldenScores := arr("proposal_scores.npy").F32
	rois := arr("rois.npy")
	text, imageEmb, deltas := arr(OutputTextEmbeddings+".npy"), arr(OutputImageEmbeddings+".npy"), arr(OutputBoxDeltas+".npy")
	refined := arr("boxes.npy")
	d, nRoIs := m.Embedding.Dim, rois.Shape[0]
	if len(goldenProps) != len(goldenScores) || len(text.F32) != len(goldenProps)*d ||
		len(imageEmb.F32) != len(goldenProps)*d || len(deltas.F32) != 4*len(goldenProps) ||
		len(refined.F32) != 4*len(goldenProps) || nRoIs > len(goldenProps) {
		t.Fatalf("golden arrays disagree on the proposal count: proposals %v, scores %d, embeddings %v %v, deltas %v, boxes %v, rois %v",
			proposals.Shape, len(goldenScores), text.Shape, imageEmb.Shape, deltas.Shape, refined.Shape, rois.Shape)
	}
	asBox := func(r []float32) [4]float32 { return [4]float32(r) }
	props := make([][4]float32, len(goldenProps))
	for i, r := range goldenProps {
		props[i] = asBox(r)
	}

	// Preprocessing of the original image.
	raw, err := b.ReadFile(path.Join(dir, "input.png"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	data, shape, gotResize, err := imageio.Preprocess(img, p.prep)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(shape[:]) != fmt.Sprint(image.Shape) || gotResize != resize {
		t.Fatalf("preprocess: shape %v %+v, golden %v %+v", shape, gotResize, image.Shape, resize)
	}
	within(t, "preprocess", data, image.F32, tolPreproc)

	// 1. Each graph under ONNX Runtime on its golden input.
	imageTensor := ort.Tensor{Shape: make([]int64, len(image.Shape)), F32: image.F32}
	for i, n := range image.Shape {
		imageTensor.Shape[i] = int64(n)
	}
	out, err := p.backbone.Run(ctx, map[string]ort.Tensor{InputImage: imageTensor})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range p.backbone.Outputs() {
		within(t, "backbone graph "+o.Name, out[o.Name].F32, arr(o.Name+".npy").F32, tolGraph)
	}
	if nRoIs == 0 {
		t.Fatal("golden rois.npy is empty: the case has no proposals to check")
	}
	roiShape := []int64{int64(nRoIs), int64(rois.Shape[1]), int64(rois.Shape[2]), int64(rois.Shape[3])}
	head, err := p.boxHead.Run(ctx, map[string]ort.Tensor{InputRoIs: {Shape: roiShape, F32: rois.F32}})
	if err != nil {
		t.Fatal(err)
	}
	within(t, "box head graph "+OutputTextEmbeddings, head[OutputTextEmbeddings].F32, text.F32[:nRoIs*d], tolGraph)
	within(t, "box head graph "+OutputImageEmbeddings, head[OutputImageEmbeddings].F32, imageEmb.F32[:nRoIs*d], tolGraph)
	within(t, "box head graph "+OutputBoxDeltas, head[OutputBoxDeltas].F32, deltas.F32[:nRoIs*4], tolGraph)

	// 2. Anchors and rpn.Propose on the golden head outputs.
	levels := make([]rpn.Level, len(p.rpnLevels))
	for i, l := range p.rpnLevels {
		logits, rdeltas := arr("rpn_logits_"+l.Name+".npy"), arr("rpn_deltas_"+l.Name+".npy")
		h, w := logits.Shape[2], logits.Shape[3]
		levels[i] = rpn.Level{Logits: logits.F32, Deltas: rdeltas.F32, Height: h, Width: w, Sizes: l.AnchorSizes}
		sy, sx := rpn.Strides(h, w, meta.PaddedHeight, meta.PaddedWidth)
		anchors := rpn.Anchors(rpn.CellAnchors(l.AnchorSizes, m.Anchors.AspectRatios), h, w, sy, sx)
		within(t, "anchors "+l.Name, flatBoxes(anchors), arr("anchors_"+l.Name+".npy").F32, tolAnchor)
	}
	got, err := rpn.Propose(levels, p.rpnConfig, rpn.Image{Height: meta.ResizedHeight, Width: meta.ResizedWidth,
		PaddedHeight: meta.PaddedHeight, PaddedWidth: meta.PaddedWidth})
	if err != nil {
		t.Fatal(err)
	}
	within(t, "rpn proposals", flatBoxes(got.Boxes), proposals.F32, tolProposal)
	within(t, "rpn proposal scores", got.Scores, goldenScores, tolScore)

	// 3. RoIAlign on the golden features and proposals.
	feats := make([]roialign.Feature, len(p.roiLevels))
	for i, l := range p.roiLevels {
		f := arr("feat_" + l.Name + ".npy")
		feats[i] = roialign.Feature{Data: f.F32, Channels: f.Shape[1], Height: f.Shape[2], Width: f.Shape[3],
			Scale: 1 / float32(l.Stride)}
	}
	pooled, err := roialign.MultiScale(nil, feats, props[:nRoIs], p.roiConfig)
	if err != nil {
		t.Fatal(err)
	}
	within(t, "roialign", pooled, rois.F32, tolRoI)

	// 4. Box decode of the golden deltas on the golden proposals.
	decoded := make([][4]float32, len(props))
	rw, rh := float32(meta.ResizedWidth), float32(meta.ResizedHeight)
	for i, prop := range props {
		decoded[i] = resize.ToOriginal(boxes.Clip(p.coder.Decode(asBox(deltas.F32[4*i:4*i+4]), prop), rw, rh))
	}
	within(t, "box decode", flatBoxes(decoded), refined.F32, tolBox)

	// 4b. The teacher's crops of the first regions (bundles with
	// embedding.crops), cut from the golden image the backbone saw.
	var goldenCrops *bundle.Array
	if c := m.Embedding.Crops; c != nil {
		if p.crops == nil {
			t.Fatal("the manifest has embedding.crops, the pipeline no crop encoder")
		}
		goldenCrops = arr("crop_embeddings.npy")
		k := min(c.Regions, len(props))
		if goldenCrops.Shape[0] != k || goldenCrops.Shape[1] != d {
			t.Fatalf("golden crop_embeddings.npy %v, want [%d %d]", goldenCrops.Shape, k, d)
		}
		inResized := make([][4]float32, k)
		for i := range k {
			inResized[i] = boxes.Clip(p.coder.Decode(asBox(deltas.F32[4*i:4*i+4]), props[i]), rw, rh)
		}
		got, err := p.crops.EmbedRegions(ctx, p.resizedRGB(imageTensor, resize), inResized, CropViews(m), 0)
		if err != nil {
			t.Fatal(err)
		}
		within(t, "crop embeddings", flatRows(got), goldenCrops.F32, tolGraph)
	}

	// 5. Scoring of the golden embeddings and boxes.
	regions := &detector.Regions{Width: meta.Width, Height: meta.Height,
		TextEmbeddings: bundle.Rows(text.F32, d), ImageEmbeddings: bundle.Rows(imageEmb.F32, d)}
	if goldenCrops != nil {
		regions.CropEmbeddings = bundle.Rows(goldenCrops.F32, d)
	}
	for _, r := range bundle.Rows(refined.F32, 4) {
		regions.Boxes = append(regions.Boxes, asBox(r))
	}
	vocab := categoryVocabulary(t, b)
	res, err := p.Score(ctx, regions, vocab, p.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	compareDetections(t, "scoring", res.Detections, wantDets)

	// 6. The chain: input.png through ONNX Runtime and every Go stage.
	tr, err := p.Run(ctx, ort.Tensor{Shape: shape[:], F32: data}, gotResize)
	if err != nil {
		t.Fatal(err)
	}
	var goldenP, goP []scored
	for i, bx := range props {
		goldenP = append(goldenP, scored{score: goldenScores[i], box: bx})
	}
	for i, bx := range tr.Proposals.Boxes {
		goP = append(goP, scored{score: tr.Proposals.Scores[i], box: bx})
	}
	partner, _, _ := match(goldenP, goP, 0, chainPropIoU, chainPropScore)
	matched, worstText, worstImage, worstBox, worstCrop := 0, 0.0, 0.0, 0.0, 0.0
	for i, j := range partner {
		if j < 0 {
			if i < chainTopProposals {
				t.Errorf("end to end: golden proposal %d %v (score %.4f) has no Go match", i, props[i], goldenScores[i])
			}
			continue
		}
		matched++
		// The region of a matched proposal: its embeddings and refined box.
		r := tr.Regions
		dt, _ := testbundle.MaxAbsDiff(r.TextEmbeddings[j], text.F32[i*d:(i+1)*d])
		di, _ := testbundle.MaxAbsDiff(r.ImageEmbeddings[j], imageEmb.F32[i*d:(i+1)*d])
		db, _ := testbundle.MaxAbsDiff(r.Boxes[j][:], refined.F32[4*i:4*i+4])
		worstText, worstImage, worstBox = max(worstText, dt), max(worstImage, di), max(worstBox, db)
		if goldenCrops != nil && i < goldenCrops.Shape[0] && j < len(r.CropEmbeddings) {
			dc, _ := testbundle.MaxAbsDiff(r.CropEmbeddings[j], goldenCrops.F32[i*d:(i+1)*d])
			worstCrop = max(worstCrop, dc)
		}
	}
	t.Logf("end to end: %d/%d golden proposals matched (IoU ≥ %g, score ±%g), %d Go proposals; "+
		"matched regions differ by at most %.3g (text), %.3g (image embeddings), %.3g (crop embeddings), %.3g px (boxes)",
		matched, len(props), chainPropIoU, chainPropScore, len(tr.Proposals.Boxes), worstText, worstImage, worstCrop, worstBox)
	if float64(matched) < chainPropRecall*float64(len(props)) {
		t.Errorf("end to end: only %d of %d golden proposals matched, want %g", matched, len(props), chainPropRecall)
	}
	if worstText > chainEmbedding || worstImage > chainEmbedding || worstCrop > chainEmbedding || worstBox > chainBox {
		t.Errorf("end to end: matched regions differ by %.3g, %.3g, %.3g (text, image, crop embeddings; tolerance %g), %.3g px (boxes; tolerance %g)",
			worstText, worstImage, worstCrop, chainEmbedding, worstBox, chainBox)
	}
	if c := m.Embedding.Crops; c != nil && len(tr.Regions.CropEmbeddings) != min(c.Regions, len(tr.Regions.Boxes)) {
		t.Errorf("end to end: %d crop embeddings for %d regions, want the first %d", len(tr.Regions.CropEmbeddings), len(tr.Regions.Boxes), c.Regions)
	}
	res, err = p.Detect(ctx, img, vocab, p.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	var goldenD, goD []scored
	for _, w := range wantDets {
		goldenD = append(goldenD, scored{w.Label, w.Score, w.Box})
	}
	for _, g := range res.Detections {
		goD = append(goD, scored{g.Label, g.Score, g.Box})
	}
	matchBothWays(t, "end to end detections", goldenD, goD, chainMinScore, chainIoU, chainScore)
	if res.Width != meta.Width || res.Height != meta.Height {
		t.Errorf("result size %dx%d, image %dx%d", res.Width, res.Height, meta.Width, meta.Height)
	}
	if tm := res.Timings; tm.Backbone <= 0 || tm.BoxHead <= 0 || tm.Scoring <= 0 || (m.Embedding.Crops != nil) != (tm.Crops > 0) {
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
