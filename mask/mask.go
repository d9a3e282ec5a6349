// Package mask turns detections into instance masks with a bundle's Mask R-CNN
// mask head (docs/bundle.md, mask_head): RoIAlign of the FPN features over
// each final box (roialign, the mask head's output size), the mask graph
// (ONNX Runtime), the sigmoid, and the paste into the original image exactly
// as torchvision's paste_masks_in_image (Paste). Masks are encoded as COCO
// run-length encodings (RLE, compatible with pycocotools) or as polygons
// (Polygons).
package mask

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/roialign"
)

// Graph input and output names (docs/bundle.md).
const (
	InputRoIs   = "rois"
	OutputMasks = "mask_logits"
)

// PastePadding is torchvision's paste_masks_in_image padding.
const PastePadding = 1

// Mask is one binary instance mask of a Width × Height image. Only the pixels
// inside Box can be set; Pix holds them row by row, 1 for the mask, 0 not.
type Mask struct {
	Width, Height int
	Box           image.Rectangle // within the image
	Pix           []uint8         // Box.Dx() × Box.Dy()
}

// At reports whether pixel (x, y) is in the mask.
func (m *Mask) At(x, y int) bool {
	if !(image.Point{x, y}).In(m.Box) {
		return false
	}
	return m.Pix[(y-m.Box.Min.Y)*m.Box.Dx()+x-m.Box.Min.X] != 0
}

// Area is the number of mask pixels.
func (m *Mask) Area() int {
	n := 0
	for _, v := range m.Pix {
		n += int(v)
	}
	return n
}

// Dense returns the mask as Height × Width bytes, row by row.
func (m *Mask) Dense() []uint8 {
	out := make([]uint8, m.Width*m.Height)
	w := m.Box.Dx()
	for y := m.Box.Min.Y; y < m.Box.Max.Y; y++ {
		copy(out[y*m.Width+m.Box.Min.X:], m.Pix[(y-m.Box.Min.Y)*w:(y-m.Box.Min.Y+1)*w])
	}
	return out
}

// Paste is torchvision's paste_masks_in_image (padding 1) for one mask
// followed by the threshold: prob, the M × M mask probabilities of box (x1,
// y1, x2, y2 in the image's pixels), is padded by one zero on each side, the
// box expanded by (M+2)/M about its centre and truncated to integers, the
// padded mask resized to the expanded box's (x2-x1+1) × (y2-y1+1) pixels
// (bilinear, align_corners=False, as F.interpolate) and placed there; pixels
// with probability ≥ threshold form the mask. Arithmetic is float32, as
// torch's on CPU.
func Paste(prob []float32, m int, box [4]float32, width, height int, threshold float32) Mask {
	out := Mask{Width: width, Height: height}
	p := m + 2*PastePadding
	padded := make([]float32, p*p)
	for i := range m {
		copy(padded[(i+PastePadding)*p+PastePadding:], prob[i*m:(i+1)*m])
	}
	scale := float32(float64(p) / float64(m))
	wHalf := float32(float32(box[2]-box[0])*0.5) * scale
	hHalf := float32(float32(box[3]-box[1])*0.5) * scale
	xc := float32(box[2]+box[0]) * 0.5
	yc := float32(box[3]+box[1]) * 0.5
	bx0, bx1 := truncate(float32(xc-wHalf)), truncate(float32(xc+wHalf))
	by0, by1 := truncate(float32(yc-hHalf)), truncate(float32(yc+hHalf))
	w, h := max(bx1-bx0+1, 1), max(by1-by0+1, 1)
	x0, x1 := max(bx0, 0), min(bx1+1, width)
	y0, y1 := max(by0, 0), min(by1+1, height)
	if x0 >= x1 || y0 >= y1 {
		return out
	}
	out.Box = image.Rect(x0, y0, x1, y1)
	out.Pix = make([]uint8, (x1-x0)*(y1-y0))
	xs := linearWeights(p, w, x0-bx0, x1-bx0)
	ys := linearWeights(p, h, y0-by0, y1-by0)
	for j, wy := range ys {
		r0, r1 := padded[wy.i0*p:], padded[wy.i1*p:]
		row := out.Pix[j*(x1-x0):]
		for i, wx := range xs {
			v := float32(float32(r0[wx.i0]*wx.l0)+float32(r0[wx.i1]*wx.l1))*wy.l0 +
				float32(float32(r1[wx.i0]*wx.l0)+float32(r1[wx.i1]*wx.l1))*wy.l1
			if v >= threshold {
				row[i] = 1
			}
		}
	}
	return out
}

// truncate converts toward zero, as torch's .to(torch.int64).
func truncate(v float32) int {
	if math.IsNaN(float64(v)) {
		return 0
	}
	return int(v)
}

type weight struct {
	i0, i1 int
	l0, l1 float32
}

// linearWeights are F.interpolate's (bilinear, align_corners=False) source
// indices and weights for output indices [from, to) of an in → out resize.
func linearWeights(in, out, from, to int) []weight {
	scale := float32(in) / float32(out)
	ws := make([]weight, 0, to-from)
	for d := from; d < to; d++ {
		src := float32(scale*float32(float32(d)+0.5)) - 0.5
		if src < 0 {
			src = 0
		}
		i0 := int(src)
		i1 := i0
		if i0 < in-1 {
			i1 = i0 + 1
		}
		l1 := min(max(src-float32(i0), 0), 1)
		ws = append(ws, weight{i0: i0, i1: i1, l0: 1 - l1, l1: l1})
	}
	return ws
}

// Sigmoid is the logistic function, in place.
func Sigmoid(v []float32) {
	for i, x := range v {
		v[i] = float32(1 / (1 + math.Exp(-float64(x))))
	}
}

// Head runs a bundle's mask head. It is safe for concurrent use.
type Head struct {
	cfg       bundle.MaskHead
	channels  int
	graph     ort.Session
	ownGraph  bool
	roiConfig roialign.Config
}

// ErrNoMaskHead is returned by Open for a bundle without a mask head.
var ErrNoMaskHead = errors.New("mask: the model has no mask head")

// Open loads bundle b's mask head into rt; ErrNoMaskHead when it has none.
func Open(b *bundle.Bundle, rt ort.Runtime, workers int) (*Head, error) {
	if b.Manifest.MaskHead == nil {
		return nil, ErrNoMaskHead
	}
	model, err := b.ReadFile(b.Manifest.MaskHead.Graph)
	if err != nil {
		return nil, fmt.Errorf("mask: %w", err)
	}
	s, err := rt.NewSession(b.Manifest.MaskHead.Graph, model)
	if err != nil {
		return nil, fmt.Errorf("mask: %s: %w", b.Source, err)
	}
	h, err := New(b.Manifest, s, workers)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("mask: %s: %w", b.Source, err)
	}
	h.ownGraph = true
	return h, nil
}

// New wraps a loaded mask graph (which Close leaves open) after checking its
// signature against the manifest.
func New(m *bundle.Manifest, graph ort.Session, workers int) (*Head, error) {
	if m.MaskHead == nil {
		return nil, ErrNoMaskHead
	}
	c, s, ms := int64(m.FPN.Channels), int64(m.MaskHead.RoIAlign.OutputSize), int64(m.MaskHead.MaskSize)
	if err := ort.CheckSignature(graph,
		[]ort.Info{{Name: InputRoIs, DType: ort.Float32, Shape: []int64{-1, c, s, s}}},
		[]ort.Info{{Name: OutputMasks, DType: ort.Float32, Shape: []int64{-1, 1, ms, ms}}}); err != nil {
		return nil, err
	}
	a := m.MaskHead.RoIAlign
	return &Head{cfg: *m.MaskHead, channels: int(c), graph: graph,
		roiConfig: roialign.Config{OutputSize: a.OutputSize, SamplingRatio: a.SamplingRatio, Aligned: a.Aligned,
			CanonicalScale: int(a.CanonicalScale), CanonicalLevel: a.CanonicalLevel, Workers: workers}}, nil
}

// Close closes the graph session when Open created it.
func (h *Head) Close() error {
	if !h.ownGraph {
		return nil
	}
	return h.graph.Close()
}

// Threshold is the manifest's mask threshold.
func (h *Head) Threshold() float32 { return h.cfg.Threshold }

// Features are one image's FPN levels that RoIAlign pools, with the resize
// that maps original-image boxes onto them.
type Features struct {
	Levels         []roialign.Feature // Scale: 1/stride
	ScaleX, ScaleY float64            // resized / original, per axis
	Width, Height  int                // the original image
}

// FeaturesOf are a detector's kept features of a width × height image.
func FeaturesOf(d *detector.Features, width, height int) *Features {
	f := &Features{ScaleX: d.ScaleX, ScaleY: d.ScaleY, Width: width, Height: height}
	for _, l := range d.Levels {
		f.Levels = append(f.Levels, roialign.Feature{Data: l.Data, Channels: l.Channels, Height: l.Height,
			Width: l.Width, Scale: 1 / float32(l.Stride)})
	}
	return f
}

// Logits pools the features over boxes (original-image pixels) and runs the
// mask graph: [N, M, M] mask logits, and the pooled RoIs [N, C, S, S].
func (h *Head) Logits(ctx context.Context, f *Features, boxes [][4]float32) (logits, rois []float32, err error) {
	if len(boxes) == 0 {
		return nil, nil, nil
	}
	sx, sy := float32(f.ScaleX), float32(f.ScaleY)
	scaled := make([][4]float32, len(boxes))
	for i, b := range boxes {
		scaled[i] = [4]float32{b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy}
	}
	rois, err = roialign.MultiScale(nil, f.Levels, scaled, h.roiConfig)
	if err != nil {
		return nil, nil, fmt.Errorf("mask: roialign: %w", err)
	}
	s, n := int64(h.cfg.RoIAlign.OutputSize), len(boxes)
	out, err := h.graph.Run(ctx, map[string]ort.Tensor{InputRoIs: {Shape: []int64{int64(n), int64(h.channels), s, s}, F32: rois}})
	if err != nil {
		return nil, nil, fmt.Errorf("mask: mask head: %w", err)
	}
	t := out[OutputMasks]
	if m := h.cfg.MaskSize; len(t.F32) != n*m*m {
		return nil, nil, fmt.Errorf("mask: mask head returned %v for %d boxes", t.Shape, n)
	}
	return t.F32, rois, nil
}

// Masks are the instance masks of boxes (original-image pixels), in order.
func (h *Head) Masks(ctx context.Context, f *Features, boxes [][4]float32) ([]Mask, error) {
	logits, _, err := h.Logits(ctx, f, boxes)
	if err != nil {
		return nil, err
	}
	Sigmoid(logits)
	m := h.cfg.MaskSize
	out := make([]Mask, len(boxes))
	for i, b := range boxes {
		out[i] = Paste(logits[i*m*m:(i+1)*m*m], m, b, f.Width, f.Height, h.cfg.Threshold)
	}
	return out, nil
}

// ErrFormat: a mask format other than RLE or polygons.
var ErrFormat = errors.New("mask: unknown mask format")

// Encode sets d's Mask (RLE) or Polygons from m, as format asks.
func Encode(d *detector.Detection, m *Mask, format detector.Masks) error {
	switch format {
	case detector.MasksRLE:
		r := m.EncodeRLE()
		d.Mask = &r
	case detector.MasksPolygon:
		d.Polygons = m.Polygons()
	default:
		return fmt.Errorf("%w %q", ErrFormat, format)
	}
	return nil
}
