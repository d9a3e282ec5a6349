// Package pipeline is vild's detector: it implements detector.Detector over a
// model bundle, exactly as docs/bundle.md specifies — preprocess (imageio),
// backbone graph (ONNX Runtime), proposals (rpn), multi-level RoIAlign
// (roialign), box-head graph, class-agnostic box refinement (boxes), the
// teacher's embeddings of the best regions' crops (exemplar; for bundles
// whose ensemble consults them), and scoring against a vocabulary
// (scoring). The two graphs and scoring's
// similarity products (scoring.Graph) run on ONNX Runtime; every other
// stage is pure Go.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"image"
	"time"

	"github.com/vild/vild/boxes"
	"github.com/vild/vild/bundle"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/exemplar"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/mask"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/roialign"
	"github.com/vild/vild/rpn"
	"github.com/vild/vild/scoring"
)

// Graph input and output names (docs/bundle.md).
const (
	InputImage            = "image"
	InputRoIs             = "rois"
	OutputTextEmbeddings  = "text_embeddings"
	OutputImageEmbeddings = "image_embeddings"
	OutputBoxDeltas       = "box_deltas"
)

// Config tunes the Go stages.
type Config struct {
	Workers int // goroutines for RoIAlign and scoring; ≤ 0 means GOMAXPROCS
	// NoCrops leaves the teacher out of the ensemble of a bundle whose
	// manifest asks for it (embedding.crops): faster, ViLD's two heads only.
	NoCrops bool
}

// Pipeline runs one bundle. It is safe for concurrent use: the graphs'
// sessions are shared, every request has its own buffers.
type Pipeline struct {
	m         *bundle.Manifest
	backbone  ort.Session
	boxHead   ort.Session
	ownSess   bool
	scorer    *scoring.Model
	rpnLevels []bundle.Level
	roiLevels []bundle.Level
	rpnConfig rpn.Config
	roiConfig roialign.Config
	prep      imageio.PreprocessConfig
	coder     boxes.Coder
	masks     *mask.Head // nil: the bundle has no mask head
	ownMasks  bool
	crops     *exemplar.Encoder // nil: the ensemble does not consult the teacher
	ownCrops  bool
	workers   int
}

var _ detector.Detector = (*Pipeline)(nil)

// Open loads bundle b's backbone and box-head graphs into rt and checks their
// signatures against the manifest.
func Open(b *bundle.Bundle, rt ort.Runtime, cfg Config) (*Pipeline, error) {
	background, err := b.Background()
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	load := func(name string) (ort.Session, error) {
		model, err := b.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		s, err := rt.NewSession(name, model)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %s: %w", b.Source, err)
		}
		return s, nil
	}
	backbone, err := load(bundle.BackboneFile)
	if err != nil {
		return nil, err
	}
	boxHead, err := load(bundle.BoxHeadFile)
	if err != nil {
		backbone.Close()
		return nil, err
	}
	p, err := New(b.Manifest, background, backbone, boxHead, cfg)
	if err != nil {
		backbone.Close()
		boxHead.Close()
		return nil, fmt.Errorf("pipeline: %s: %w", b.Source, err)
	}
	p.ownSess = true
	if len(b.Manifest.Categories) > 0 {
		// the bundle's own categories are the reference vocabulary of stable
		// scores
		reference, err := b.CategoryEmbeddings()
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		p.SetReference(reference)
	}
	if p.scorer.Graph, err = scoring.OpenGraph(rt); err != nil {
		p.Close()
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	if b.Manifest.Embedding.Crops != nil && !cfg.NoCrops {
		enc, err := exemplar.Open(b, rt)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		p.SetCropEncoder(enc)
		p.ownCrops = true
	}
	if b.Manifest.MaskHead != nil {
		h, err := mask.Open(b, rt, cfg.Workers)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		p.SetMaskHead(h)
		p.ownMasks = true
	}
	return p, nil
}

// SetReference makes rows, the text embeddings of the model's own categories,
// the reference vocabulary of stable scores, and stable scores the default
// (Open does this with the bundle's category_embeddings.npy).
func (p *Pipeline) SetReference(rows [][]float32) { p.scorer.SetReference(rows) }

// SetCropEncoder gives the pipeline the image encoder (which Close leaves
// open) that embeds the crops of the first regions when the manifest has
// embedding.crops: its Regions then carry CropEmbeddings, which the
// ensemble consults. nil, or a manifest without embedding.crops, removes it.
func (p *Pipeline) SetCropEncoder(e *exemplar.Encoder) {
	p.crops = e
	if p.m.Embedding.Crops == nil {
		p.crops = nil
	}
}

// SetMaskHead gives the pipeline a mask head (which Close leaves open): its
// Regions then keep the features masks are pooled from.
func (p *Pipeline) SetMaskHead(h *mask.Head) { p.masks = h }

// HasMasks reports whether the pipeline computes instance masks.
func (p *Pipeline) HasMasks() bool { return p.masks != nil }

// New assembles a pipeline from a manifest, the background embedding and the
// two graph sessions (which Close leaves open).
func New(m *bundle.Manifest, background []float32, backbone, boxHead ort.Session, cfg Config) (*Pipeline, error) {
	if len(background) != m.Embedding.Dim {
		return nil, fmt.Errorf("background embedding has dimension %d, want %d", len(background), m.Embedding.Dim)
	}
	c, s, d := int64(m.FPN.Channels), int64(m.RoIAlign.OutputSize), int64(m.Embedding.Dim)
	var outs []ort.Info
	for _, l := range m.FPN.Levels {
		if l.RoI {
			outs = append(outs, ort.Info{Name: "feat_" + l.Name, DType: ort.Float32, Shape: []int64{1, c, -1, -1}})
		}
		if l.RPN {
			a := int64(m.AnchorsPerLocation(l))
			outs = append(outs,
				ort.Info{Name: "rpn_logits_" + l.Name, DType: ort.Float32, Shape: []int64{1, a, -1, -1}},
				ort.Info{Name: "rpn_deltas_" + l.Name, DType: ort.Float32, Shape: []int64{1, 4 * a, -1, -1}})
		}
	}
	if err := ort.CheckSignature(backbone,
		[]ort.Info{{Name: InputImage, DType: ort.Float32, Shape: []int64{1, 3, -1, -1}}}, outs); err != nil {
		return nil, err
	}
	if err := ort.CheckSignature(boxHead,
		[]ort.Info{{Name: InputRoIs, DType: ort.Float32, Shape: []int64{-1, c, s, s}}},
		[]ort.Info{
			{Name: OutputTextEmbeddings, DType: ort.Float32, Shape: []int64{-1, d}},
			{Name: OutputImageEmbeddings, DType: ort.Float32, Shape: []int64{-1, d}},
			{Name: OutputBoxDeltas, DType: ort.Float32, Shape: []int64{-1, 4}},
		}); err != nil {
		return nil, err
	}
	scorer := &scoring.Model{Background: background, Temperature: m.Embedding.Temperature,
		ImageTemperature: m.Embedding.ImageTemperature, Lambda: m.Embedding.EnsembleLambda, Workers: cfg.Workers}
	if c := m.Embedding.Crops; c != nil {
		scorer.Crops = &scoring.Crops{Temperature: c.Temperature, LambdaBase: c.LambdaBase, LambdaNovel: c.LambdaNovel}
	}
	return &Pipeline{
		m: m, backbone: backbone, boxHead: boxHead, workers: cfg.Workers,
		scorer:    scorer,
		rpnLevels: m.RPNLevels(), roiLevels: m.RoILevels(),
		rpnConfig: rpn.Config{AspectRatios: m.Anchors.AspectRatios, PreNMSTopN: m.RPN.PreNMSTopN,
			PostNMSTopN: m.RPN.PostNMSTopN, NMSIoU: m.RPN.NMSIoU, MinSize: m.RPN.MinSize,
			ScoreThreshold: m.RPN.ScoreThreshold, Weights: m.RPN.BoxCoderWeights},
		roiConfig: roialign.Config{OutputSize: m.RoIAlign.OutputSize, SamplingRatio: m.RoIAlign.SamplingRatio,
			Aligned: m.RoIAlign.Aligned, CanonicalScale: int(m.RoIAlign.CanonicalScale),
			CanonicalLevel: m.RoIAlign.CanonicalLevel, Workers: cfg.Workers},
		prep: imageio.PreprocessConfig{MaxSide: m.Input.MaxSide, SizeDivisible: m.Input.SizeDivisible,
			Mean: m.Input.Mean, Std: m.Input.Std},
		coder: boxes.NewCoder(m.BoxHead.BoxCoderWeights),
	}, nil
}

// Close closes the graph sessions when Open created them.
func (p *Pipeline) Close() error {
	var err error
	if p.ownMasks {
		err = p.masks.Close()
	}
	if p.ownCrops {
		err = errors.Join(err, p.crops.Close())
	}
	if !p.ownSess {
		return err
	}
	var graph error
	if p.scorer.Graph != nil {
		graph = p.scorer.Graph.Close()
	}
	return errors.Join(err, p.backbone.Close(), p.boxHead.Close(), graph)
}

// Manifest is the bundle's manifest.
func (p *Pipeline) Manifest() *bundle.Manifest { return p.m }

// DefaultOptions are the manifest's postprocess settings with the ensemble
// head and the model's default scores (stable with a category list).
func (p *Pipeline) DefaultOptions() detector.Options {
	return detector.Options{Head: detector.HeadEnsemble, ScoreThreshold: p.m.Postprocess.ScoreThreshold,
		NMSIoU: p.m.Postprocess.NMSIoU, MaxDetections: p.m.Postprocess.MaxDetections,
		LabelsPerBox: max(p.m.Postprocess.LabelsPerBox, 1), Scores: p.scorer.DefaultScores()}
}

// Trace holds every intermediate result of one image, for parity tests and
// debugging.
type Trace struct {
	Resize    imageio.Resize
	Backbone  map[string]ort.Tensor // graph outputs by name
	Proposals *rpn.Proposals        // resized-image pixels
	RoIs      []float32             // [N, C, S, S] pooled features
	BoxHead   map[string]ort.Tensor // box-head outputs by name
	Regions   *detector.Regions
}

// Regions runs the vocabulary-independent stages on img.
func (p *Pipeline) Regions(ctx context.Context, img image.Image) (*detector.Regions, error) {
	start := time.Now()
	data, shape, resize, err := imageio.Preprocess(img, p.prep)
	if err != nil {
		return nil, fmt.Errorf("pipeline: preprocess: %w", err)
	}
	tr, err := p.Run(ctx, ort.Tensor{Shape: shape[:], F32: data}, resize)
	if err != nil {
		return nil, err
	}
	t := &tr.Regions.Timings
	t.Preprocess = time.Since(start) - (t.Backbone + t.Proposals + t.RoIAlign + t.BoxHead + t.Crops)
	return tr.Regions, nil
}

// Run runs every stage after preprocessing on the backbone's input tensor
// [1, 3, H, W] of an image that resize describes.
func (p *Pipeline) Run(ctx context.Context, image ort.Tensor, resize imageio.Resize) (*Trace, error) {
	tr := &Trace{Resize: resize, Regions: &detector.Regions{Width: resize.Width, Height: resize.Height}}
	tm := &tr.Regions.Timings
	if len(image.Shape) != 4 || image.Shape[2] != int64(resize.PaddedHeight) || image.Shape[3] != int64(resize.PaddedWidth) {
		return nil, fmt.Errorf("pipeline: image tensor %v does not match %dx%d", image.Shape, resize.PaddedWidth, resize.PaddedHeight)
	}

	t0 := time.Now()
	out, err := p.backbone.Run(ctx, map[string]ort.Tensor{InputImage: image})
	if err != nil {
		return nil, runError("backbone", ctx, err)
	}
	tr.Backbone = out
	tm.Backbone = time.Since(t0)

	t0 = time.Now()
	levels := make([]rpn.Level, len(p.rpnLevels))
	for i, l := range p.rpnLevels {
		logits, deltas := out["rpn_logits_"+l.Name], out["rpn_deltas_"+l.Name]
		levels[i] = rpn.Level{Logits: logits.F32, Deltas: deltas.F32, Height: int(logits.Shape[2]),
			Width: int(logits.Shape[3]), Sizes: l.AnchorSizes}
	}
	props, err := rpn.Propose(levels, p.rpnConfig, rpn.Image{Height: resize.ResizedHeight, Width: resize.ResizedWidth,
		PaddedHeight: resize.PaddedHeight, PaddedWidth: resize.PaddedWidth})
	if err != nil {
		return nil, fmt.Errorf("pipeline: proposals: %w", err)
	}
	tr.Proposals = props
	tm.Proposals = time.Since(t0)
	feats := make([]roialign.Feature, len(p.roiLevels))
	for i, l := range p.roiLevels {
		f := out["feat_"+l.Name]
		feats[i] = roialign.Feature{Data: f.F32, Channels: int(f.Shape[1]), Height: int(f.Shape[2]),
			Width: int(f.Shape[3]), Scale: 1 / float32(l.Stride)}
	}
	if p.masks != nil {
		kept := &detector.Features{ScaleX: resize.ScaleX, ScaleY: resize.ScaleY}
		for i, f := range feats {
			kept.Levels = append(kept.Levels, detector.FeatureLevel{Data: f.Data, Channels: f.Channels,
				Height: f.Height, Width: f.Width, Stride: p.roiLevels[i].Stride})
		}
		tr.Regions.Features = kept
	}
	n := len(props.Boxes)
	if n == 0 {
		return tr, nil
	}

	t0 = time.Now()
	rois, err := roialign.MultiScale(nil, feats, props.Boxes, p.roiConfig)
	if err != nil {
		return nil, fmt.Errorf("pipeline: roialign: %w", err)
	}
	tr.RoIs = rois
	tm.RoIAlign = time.Since(t0)
	if err := ctx.Err(); err != nil {
		return nil, runError("roialign", ctx, err)
	}

	t0 = time.Now()
	s := int64(p.m.RoIAlign.OutputSize)
	head, err := p.boxHead.Run(ctx, map[string]ort.Tensor{InputRoIs: {Shape: []int64{int64(n), int64(p.m.FPN.Channels), s, s}, F32: rois}})
	if err != nil {
		return nil, runError("box head", ctx, err)
	}
	tr.BoxHead = head
	d := p.m.Embedding.Dim
	te, ie, deltas := head[OutputTextEmbeddings], head[OutputImageEmbeddings], head[OutputBoxDeltas]
	if len(te.F32) != n*d || len(ie.F32) != n*d || len(deltas.F32) != n*4 {
		return nil, fmt.Errorf("pipeline: box head returned %v, %v, %v for %d regions", te.Shape, ie.Shape, deltas.Shape, n)
	}
	r := tr.Regions
	r.TextEmbeddings = bundle.Rows(te.F32, d)
	r.ImageEmbeddings = bundle.Rows(ie.F32, d)
	r.Boxes = make([][4]float32, n)
	resized := make([][4]float32, n)
	rw, rh := float32(resize.ResizedWidth), float32(resize.ResizedHeight)
	for i, prop := range props.Boxes {
		delta := [4]float32(deltas.F32[4*i : 4*i+4])
		resized[i] = boxes.Clip(p.coder.Decode(delta, prop), rw, rh)
		r.Boxes[i] = resize.ToOriginal(resized[i])
	}
	tm.BoxHead = time.Since(t0)
	if p.crops != nil {
		t0 = time.Now()
		k := min(p.m.Embedding.Crops.Regions, n)
		if r.CropEmbeddings, err = p.crops.EmbedRegions(ctx, p.resizedRGB(image, resize), resized[:k], CropViews(p.m), p.workers); err != nil {
			return nil, runError("crops", ctx, err)
		}
		tm.Crops = time.Since(t0)
	}
	return tr, nil
}

// cropViews are the views of each region the teacher sees, as manifest m's
// embedding.crops names them (absent scales: the image encoder's).
func CropViews(m *bundle.Manifest) exemplar.Views {
	c := m.Embedding.Crops
	if c == nil {
		return exemplar.Views{}
	}
	return exemplar.Views{Scales: c.Views(m.ImageEncoder), Mirror: c.Mirror}
}

// resizedRGB is the resized picture in [0, 1] (the backbone's input before
// normalisation and padding) as planes for the teacher's crops: the regions'
// crops are cut from the picture the detector saw, as its teacher targets
// were in training.
func (p *Pipeline) resizedRGB(image ort.Tensor, resize imageio.Resize) roialign.Feature {
	h, w := resize.ResizedHeight, resize.ResizedWidth
	ph, pw := resize.PaddedHeight, resize.PaddedWidth
	out := make([]float32, 3*h*w)
	for c := range 3 {
		m, s := p.m.Input.Mean[c], p.m.Input.Std[c]
		for y := range h {
			src := image.F32[(c*ph+y)*pw : (c*ph+y)*pw+w]
			dst := out[(c*h+y)*w : (c*h+y)*w+w]
			for x, v := range src {
				dst[x] = v*s + m
			}
		}
	}
	return roialign.Feature{Data: out, Channels: 3, Height: h, Width: w, Scale: 1}
}

// Score classifies regions against vocab. A zero NMSIoU or MaxDetections in
// opts takes the manifest's default.
func (p *Pipeline) Score(ctx context.Context, r *detector.Regions, vocab *detector.Vocabulary, opts detector.Options) (*detector.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", detector.ErrCanceled, err)
	}
	if vocab == nil || len(vocab.Classes) == 0 {
		return nil, detector.ErrEmptyVocabulary
	}
	for _, c := range vocab.Classes {
		if len(c.Embedding) != p.m.Embedding.Dim {
			return nil, fmt.Errorf("%w: class %q has %d, the model %d", detector.ErrEmbeddingDim, c.Label, len(c.Embedding), p.m.Embedding.Dim)
		}
	}
	if opts.NMSIoU == 0 {
		opts.NMSIoU = p.m.Postprocess.NMSIoU
	}
	if opts.MaxDetections == 0 {
		opts.MaxDetections = p.m.Postprocess.MaxDetections
	}
	t0 := time.Now()
	dets := []detector.Detection{}
	if len(r.Boxes) > 0 {
		var err error
		if dets, err = p.scorer.Score(r, vocab, opts); err != nil {
			return nil, fmt.Errorf("pipeline: score: %w", err)
		}
	}
	res := &detector.Result{Width: r.Width, Height: r.Height, Detections: dets, Timings: r.Timings}
	res.Timings.Scoring = time.Since(t0)
	if opts.Masks != detector.MasksNone {
		t0 = time.Now()
		if err := p.addMasks(ctx, r, dets, opts.Masks); err != nil {
			return nil, err
		}
		res.Timings.Masks = time.Since(t0)
	}
	return res, nil
}

// addMasks computes the instance masks of dets (the final detections, so only
// they pay) from r's features and encodes them as format asks.
func (p *Pipeline) addMasks(ctx context.Context, r *detector.Regions, dets []detector.Detection, format detector.Masks) error {
	if p.masks == nil || r.Features == nil {
		return detector.ErrMasksUnsupported
	}
	if len(dets) == 0 {
		return nil
	}
	// The labels of one region share its box (LabelsPerBox > 1): each
	// distinct box runs through the mask head once.
	var bs [][4]float32
	index := map[[4]float32]int{}
	of := make([]int, len(dets))
	for i, d := range dets {
		k, ok := index[d.Box]
		if !ok {
			k = len(bs)
			index[d.Box] = k
			bs = append(bs, d.Box)
		}
		of[i] = k
	}
	ms, err := p.masks.Masks(ctx, mask.FeaturesOf(r.Features, r.Width, r.Height), bs)
	if err != nil {
		return runError("masks", ctx, err)
	}
	for i := range dets {
		if err := mask.Encode(&dets[i], &ms[of[i]], format); err != nil {
			return fmt.Errorf("pipeline: masks: %w", err)
		}
	}
	return nil
}

// Detect is Regions followed by Score.
func (p *Pipeline) Detect(ctx context.Context, img image.Image, vocab *detector.Vocabulary, opts detector.Options) (*detector.Result, error) {
	r, err := p.Regions(ctx, img)
	if err != nil {
		return nil, err
	}
	return p.Score(ctx, r, vocab, opts)
}

// Warmup runs a mid-grey image through the vocabulary-independent stages,
// so that a server is ready only once the graphs have run.
func (p *Pipeline) Warmup(ctx context.Context) error {
	img := image.NewGray(image.Rect(0, 0, p.m.Input.MaxSide, p.m.Input.MaxSide*3/4))
	for i := range img.Pix {
		img.Pix[i] = 128
	}
	if _, err := p.Regions(ctx, img); err != nil {
		return fmt.Errorf("pipeline: warm-up: %w", err)
	}
	return nil
}

func runError(stage string, ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %s: %w", detector.ErrCanceled, stage, err)
	}
	return fmt.Errorf("pipeline: %s: %w", stage, err)
}
