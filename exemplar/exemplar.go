// Package exemplar turns example crops (an image and a box) into embeddings in
// the detector's embedding space, with a bundle's mini-CLIP image encoder
// (docs/bundle.md, "image_encoder"). The embedding is the teacher's view of
// the box: it is cropped square at each of the manifest's crop scales about
// its centre (RoIAlign with aligned sampling and an adaptive grid, zeros
// outside the image), resized to the encoder's input size, normalised, run
// through the graph (with the manifest's mirror, each crop mirrored left to
// right as well), and the unit embeddings summed over the views and
// L2-normalised, then moved across the modality gap by the bundle's shift
// vector (when it has one) and L2-normalised again. Several exemplars of a
// category are averaged into the category's embedding by vocabulary.Build.
package exemplar

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/roialign"
	"github.com/vild/vild/vocabulary"
)

// Graph input and output names of image_encoder.onnx.
const (
	InputImage            = "image"
	OutputImageEmbeddings = "image_embeddings"
)

// MinBoxSide is the smallest box side, in pixels, an exemplar may have.
const MinBoxSide = 2

// Errors: ErrNoEncoder when the bundle has no image encoder; ErrBox wraps
// every rejected box (the message says why, without echoing the image).
var (
	ErrNoEncoder = errors.New("this model has no image encoder, so it takes no exemplars")
	ErrBox       = errors.New("invalid exemplar box")
)

// Encoder embeds exemplars with one bundle's image encoder. It is safe for
// concurrent use (ONNX Runtime sessions are).
type Encoder struct {
	cfg     bundle.ImageEncoder
	dim     int
	sess    ort.Session
	ownSess bool
	shift   []float32 // nil: none
}

// Open loads bundle b's image encoder into rt and checks its signature. A
// bundle without one gives ErrNoEncoder.
func Open(b *bundle.Bundle, rt ort.Runtime) (*Encoder, error) {
	if b.Manifest.ImageEncoder == nil {
		return nil, ErrNoEncoder
	}
	model, err := b.ReadFile(b.Manifest.ImageEncoder.File)
	if err != nil {
		return nil, fmt.Errorf("exemplar: %w", err)
	}
	s, err := rt.NewSession(b.Manifest.ImageEncoder.File, model)
	if err != nil {
		return nil, fmt.Errorf("exemplar: %s: %w", b.Source, err)
	}
	e, err := New(*b.Manifest.ImageEncoder, b.Manifest.Embedding.Dim, s)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("exemplar: %s: %w", b.Source, err)
	}
	e.ownSess = true
	if name := b.Manifest.ImageEncoder.Shift; name != "" {
		a, err := b.ReadArray(name)
		if err == nil && (a.F32 == nil || len(a.F32) != e.dim) {
			err = fmt.Errorf("%s holds %d float32 values, want %d", name, len(a.F32), e.dim)
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("exemplar: %s: %w", b.Source, err)
		}
		e.shift = a.F32
	}
	return e, nil
}

// New wraps an image-encoder session (which Close leaves open) for the
// manifest section cfg and embedding dimension dim.
func New(cfg bundle.ImageEncoder, dim int, sess ort.Session) (*Encoder, error) {
	n := int64(cfg.InputSize)
	if err := ort.CheckSignature(sess,
		[]ort.Info{{Name: InputImage, DType: ort.Float32, Shape: []int64{-1, 3, n, n}}},
		[]ort.Info{{Name: OutputImageEmbeddings, DType: ort.Float32, Shape: []int64{-1, int64(dim)}}}); err != nil {
		return nil, err
	}
	return &Encoder{cfg: cfg, dim: dim, sess: sess}, nil
}

// Close closes the session when Open created it.
func (e *Encoder) Close() error {
	if !e.ownSess {
		return nil
	}
	return e.sess.Close()
}

// Dim is the embedding dimension.
func (e *Encoder) Dim() int { return e.dim }

// CheckBox validates a box [x1, y1, x2, y2] in the pixels of an image of the
// given size: finite, inside the image, each side at least MinBoxSide.
func CheckBox(box [4]float32, width, height int) error {
	for _, v := range box {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: coordinates must be finite numbers", ErrBox)
		}
	}
	if box[0] < 0 || box[1] < 0 || box[2] > float32(width) || box[3] > float32(height) {
		return fmt.Errorf("%w: [x1, y1, x2, y2] must lie inside the image (0 ≤ x1, x2 ≤ width; 0 ≤ y1, y2 ≤ height)", ErrBox)
	}
	if box[2]-box[0] < MinBoxSide || box[3]-box[1] < MinBoxSide {
		return fmt.Errorf("%w: x2 - x1 and y2 - y1 must be at least %d pixels", ErrBox, MinBoxSide)
	}
	return nil
}

// Crops returns the encoder's input for one box: [len(crop_scales), 3, S, S]
// normalised crops, scale by scale. The box is in img's pixels (CheckBox).
func (e *Encoder) Crops(img image.Image, box [4]float32) ([]float32, error) {
	return e.cropsAt(img, box, e.cfg.CropScales)
}

// cropsAt is Crops at the given scales.
func (e *Encoder) cropsAt(img image.Image, box [4]float32, scales []float32) ([]float32, error) {
	b := img.Bounds()
	if err := CheckBox(box, b.Dx(), b.Dy()); err != nil {
		return nil, err
	}
	scaled := make([][4]float32, len(scales))
	for i, s := range scales {
		scaled[i] = squareCrop(box, s)
	}
	// Only the pixels the largest crop reads, plus a margin of 2 that keeps
	// the window's inner edges out of reach of the bilinear samples (roi_align
	// treats a map's edges specially; where the window meets the image's edge
	// it is the image's).
	x0, y0, x1, y1 := b.Dx(), b.Dy(), 0, 0
	for _, c := range scaled {
		x0 = min(x0, max(0, int(math.Floor(float64(c[0])))-2))
		y0 = min(y0, max(0, int(math.Floor(float64(c[1])))-2))
		x1 = max(x1, min(b.Dx(), int(math.Ceil(float64(c[2])))+3))
		y1 = max(y1, min(b.Dy(), int(math.Ceil(float64(c[3])))+3))
	}
	feat := roialign.Feature{Data: imageio.RGBPlanes(img, image.Rect(x0, y0, x1, y1)), Channels: 3,
		Height: y1 - y0, Width: x1 - x0, Scale: 1}
	for i := range scaled {
		scaled[i] = [4]float32{scaled[i][0] - float32(x0), scaled[i][1] - float32(y0),
			scaled[i][2] - float32(x0), scaled[i][3] - float32(y0)}
	}
	return e.align(feat, scaled, 1)
}

// align cuts the squares (in feat's pixels) at the encoder's input size and
// normalises them: [len(squares), 3, S, S].
func (e *Encoder) align(feat roialign.Feature, squares [][4]float32, workers int) ([]float32, error) {
	n := e.cfg.InputSize
	out, err := roialign.Align(nil, feat, squares, roialign.Config{OutputSize: n, SamplingRatio: 0, Aligned: true, Workers: workers})
	if err != nil {
		return nil, fmt.Errorf("exemplar: crop: %w", err)
	}
	plane := n * n
	for i := range len(squares) * 3 {
		c := i % 3
		m, s := e.cfg.Mean[c], e.cfg.Std[c]
		for j, v := range out[i*plane : (i+1)*plane] {
			out[i*plane+j] = (v - m) / s
		}
	}
	return out, nil
}

// Views are the crops of a region the teacher sees: a square at each of
// Scales about its centre, and with Mirror each also mirrored left to right.
type Views struct {
	Scales []float32
	Mirror bool
}

// EmbedRegions embeds a detector's regions as exemplars are embedded, before
// the shift, from a picture already in planes: rgb is [3, H, W] in [0, 1]
// (Scale 1), boxes are in its pixels and may have any size (a square of side
// at least the crop scale is cut; zeros outside the picture). Each region's
// embedding is the unit sum of its views' (views.Scales empty: the image
// encoder's crop scales). workers bounds the goroutines of the crops.
func (e *Encoder) EmbedRegions(ctx context.Context, rgb roialign.Feature, boxes [][4]float32, views Views, workers int) ([][]float32, error) {
	if len(boxes) == 0 {
		return nil, nil
	}
	scales := views.Scales
	if len(scales) == 0 {
		scales = e.cfg.CropScales
	}
	s := len(scales)
	squares := make([][4]float32, 0, len(boxes)*s)
	for _, box := range boxes {
		for _, sc := range scales {
			squares = append(squares, squareCrop(box, sc))
		}
	}
	crops, err := e.align(rgb, squares, workers)
	if err != nil {
		return nil, err
	}
	return e.fold(ctx, crops, len(boxes), s, views.Mirror)
}

// fold embeds crops [n·s, 3, S, S], s per box in box order, and with
// mirror each also mirrored; each box's embedding is the unit sum of its
// views'.
func (e *Encoder) fold(ctx context.Context, crops []float32, n, s int, mirror bool) ([][]float32, error) {
	if mirror {
		crops = append(crops, mirrored(crops, e.cfg.InputSize)...)
	}
	per, err := e.Run(ctx, crops)
	if err != nil {
		return nil, err
	}
	out := make([][]float32, n)
	for i := range n {
		own := per[i*s : (i+1)*s]
		if mirror {
			own = append(own[:s:s], per[(n+i)*s:(n+i+1)*s]...)
		}
		out[i] = vocabulary.MeanEmbedding(own)
	}
	return out, nil
}

// mirrored returns crops [N, 3, S, S] with every row reversed: each crop
// mirrored left to right.
func mirrored(crops []float32, size int) []float32 {
	out := make([]float32, len(crops))
	for r := 0; r < len(crops); r += size {
		for j := range size {
			out[r+j] = crops[r+size-1-j]
		}
	}
	return out
}

// squareCrop is losses.crop_boxes: a square of side max(w, h)·scale about the
// box's centre.
func squareCrop(box [4]float32, scale float32) [4]float32 {
	cx, cy := (box[0]+box[2])/2, (box[1]+box[3])/2
	side := max(box[2]-box[0], box[3]-box[1], 1) * scale / 2
	return [4]float32{cx - side, cy - side, cx + side, cy + side}
}

// Run runs the graph on crops [N, 3, S, S] and returns N unit embeddings.
func (e *Encoder) Run(ctx context.Context, crops []float32) ([][]float32, error) {
	n := e.cfg.InputSize
	k := len(crops) / (3 * n * n)
	if k == 0 || k*3*n*n != len(crops) {
		return nil, fmt.Errorf("exemplar: %d values are not whole %dx%d crops", len(crops), n, n)
	}
	out, err := e.sess.Run(ctx, map[string]ort.Tensor{InputImage: {Shape: []int64{int64(k), 3, int64(n), int64(n)}, F32: crops}})
	if err != nil {
		return nil, fmt.Errorf("exemplar: image encoder: %w", err)
	}
	emb := out[OutputImageEmbeddings]
	if len(emb.F32) != k*e.dim {
		return nil, fmt.Errorf("exemplar: image encoder returned %d values for %d crops of dimension %d", len(emb.F32), k, e.dim)
	}
	return bundle.Rows(emb.F32, e.dim), nil
}

// Embed returns the embedding of each box of img: EmbedUnshifted, then Shift.
func (e *Encoder) Embed(ctx context.Context, img image.Image, boxes [][4]float32) ([][]float32, error) {
	out, err := e.EmbedUnshifted(ctx, img, boxes)
	if err != nil {
		return nil, err
	}
	for i, v := range out {
		out[i] = e.Shift(v)
	}
	return out, nil
}

// Shift moves a unit embedding across the modality gap: plus the bundle's
// shift vector, L2-normalised. Without a shift it returns v.
func (e *Encoder) Shift(v []float32) []float32 {
	if e.shift == nil {
		return v
	}
	moved := make([]float32, len(v))
	for j := range v {
		moved[j] = v[j] + e.shift[j]
	}
	return vocabulary.MeanEmbedding([][]float32{moved})
}

// EmbedUnshifted returns the embedding of each box of img before the shift:
// the normalised sum of its crops' embeddings over the encoder's views (its
// crop scales, and mirrored with its mirror).
func (e *Encoder) EmbedUnshifted(ctx context.Context, img image.Image, boxes [][4]float32) ([][]float32, error) {
	return e.EmbedUnshiftedViews(ctx, img, boxes, e.Views())
}

// Views are the encoder's own views of an exemplar: the manifest's crop
// scales and mirror.
func (e *Encoder) Views() Views {
	return Views{Scales: e.cfg.CropScales, Mirror: e.cfg.Mirror}
}

// EmbedUnshiftedViews is EmbedUnshifted with other views of each box: a
// square at each of views.Scales (empty: the encoder's crop scales) and,
// with views.Mirror, each also mirrored left to right, all the views'
// embeddings summed and normalised, as EmbedRegions embeds a region.
// Exemplars are embedded with the encoder's views; `vild exemplars-eval
// --exemplar-views crops` measures them with the teacher's crops' views.
func (e *Encoder) EmbedUnshiftedViews(ctx context.Context, img image.Image, boxes [][4]float32, views Views) ([][]float32, error) {
	if len(boxes) == 0 {
		return nil, nil
	}
	scales := views.Scales
	if len(scales) == 0 {
		scales = e.cfg.CropScales
	}
	var crops []float32
	for _, box := range boxes {
		c, err := e.cropsAt(img, box, scales)
		if err != nil {
			return nil, err
		}
		crops = append(crops, c...)
	}
	return e.fold(ctx, crops, len(boxes), len(scales), views.Mirror)
}
