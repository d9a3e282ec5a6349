package imageio

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"math"
)

// PreprocessConfig is the manifest's input section.
type PreprocessConfig struct {
	MaxSide       int        // the longer side after resizing
	SizeDivisible int        // the padded tensor's sides are multiples of this
	Mean, Std     [3]float32 // per RGB channel, on [0, 1] values
}

// Resize says how an image was mapped onto the tensor.
type Resize struct {
	Width, Height               int     // original image
	ResizedWidth, ResizedHeight int     // after resizing (the valid region of the tensor)
	PaddedWidth, PaddedHeight   int     // the tensor's spatial size
	ScaleX, ScaleY              float64 // resized / original, per axis
}

// ToOriginal maps a box in resized-image pixels back to the original image:
// divided by the scale per axis, then clipped to the original size.
func (r Resize) ToOriginal(b [4]float32) [4]float32 {
	sx, sy := float32(r.ScaleX), float32(r.ScaleY)
	w, h := float32(r.Width), float32(r.Height)
	return [4]float32{
		min(max(b[0]/sx, 0), w), min(max(b[1]/sy, 0), h),
		min(max(b[2]/sx, 0), w), min(max(b[3]/sy, 0), h),
	}
}

// ErrPreprocess reports an unusable configuration or an empty image.
var ErrPreprocess = errors.New("imageio: cannot preprocess")

// ResizedSize is the size after resizing: the longer side becomes maxSide, the
// shorter keeps the aspect ratio, rounded half up, at least 1.
func ResizedSize(width, height, maxSide int) (int, int) {
	if height >= width {
		return max(1, int(float64(width)*float64(maxSide)/float64(height)+0.5)), maxSide
	}
	return maxSide, max(1, int(float64(height)*float64(maxSide)/float64(width)+0.5))
}

// Preprocess turns img into the backbone's input: a [1, 3, H, W] float32 tensor
// in C order (RGB, normalised, zero-padded at the bottom and right).
func Preprocess(img image.Image, cfg PreprocessConfig) ([]float32, [4]int64, Resize, error) {
	b := img.Bounds()
	w0, h0 := b.Dx(), b.Dy()
	if w0 <= 0 || h0 <= 0 || cfg.MaxSide <= 0 || cfg.SizeDivisible <= 0 {
		return nil, [4]int64{}, Resize{}, fmt.Errorf("%w: %dx%d image, max side %d, divisor %d",
			ErrPreprocess, w0, h0, cfg.MaxSide, cfg.SizeDivisible)
	}
	for c := range 3 {
		if !(cfg.Std[c] != 0) {
			return nil, [4]int64{}, Resize{}, fmt.Errorf("%w: std %v", ErrPreprocess, cfg.Std)
		}
	}
	w, h := ResizedSize(w0, h0, cfg.MaxSide)
	d := cfg.SizeDivisible
	wp, hp := (w+d-1)/d*d, (h+d-1)/d*d
	info := Resize{Width: w0, Height: h0, ResizedWidth: w, ResizedHeight: h, PaddedWidth: wp, PaddedHeight: hp,
		ScaleX: float64(w) / float64(w0), ScaleY: float64(h) / float64(h0)}
	out := make([]float32, 3*hp*wp)
	plane := hp * wp
	// An axis that keeps its size gets weights (1, 0) at each index, which is
	// PyTorch's copy exactly (fma(a, 1, b·0) = a).
	xs := linearTaps(w0, w)
	ys := linearTaps(h0, h)
	rows := newRowCache(img, xs)
	m0, m1, m2 := cfg.Mean[0], cfg.Mean[1], cfg.Mean[2]
	s0, s1, s2 := cfg.Std[0], cfg.Std[1], cfg.Std[2]
	for oy := range h {
		o0 := out[oy*wp : oy*wp+w]
		o1 := out[plane+oy*wp : plane+oy*wp+w]
		o2 := out[2*plane+oy*wp : 2*plane+oy*wp+w]
		ty := ys[oy]
		r0, r1 := rows.get(ty.i0), rows.get(ty.i1)
		for ox, tx := range xs {
			a, b := 3*tx.i0, 3*tx.i1
			o0[ox] = (lerp(lerp(r0[a], tx.w0, r0[b], tx.w1), ty.w0, lerp(r1[a], tx.w0, r1[b], tx.w1), ty.w1) - m0) / s0
			o1[ox] = (lerp(lerp(r0[a+1], tx.w0, r0[b+1], tx.w1), ty.w0, lerp(r1[a+1], tx.w0, r1[b+1], tx.w1), ty.w1) - m1) / s1
			o2[ox] = (lerp(lerp(r0[a+2], tx.w0, r0[b+2], tx.w1), ty.w0, lerp(r1[a+2], tx.w0, r1[b+2], tx.w1), ty.w1) - m2) / s2
		}
	}
	return out, [4]int64{1, 3, int64(hp), int64(wp)}, info, nil
}

// lerp is a·wa + b·wb as PyTorch's AVX2 build of its NCHW bilinear kernel
// computes it, width first, then height: the compiler fuses the first product
// into a multiply-add, fma(a, wa, round(b·wb)). (Its channels-last kernel, used
// for a tensor permuted from HWC, sums the four corners in another order and
// differs by at most one float32 ulp.)
func lerp(a, wa, b, wb float32) float32 {
	return float32(math.FMA(float64(a), float64(wa), float64(b*wb)))
}

// tap is one output coordinate's two source samples and weights.
type tap struct {
	i0, i1 int
	w0, w1 float32
}

// linearTaps are PyTorch's bilinear (align_corners=False) source indices and
// weights along one axis. Its CPU kernel computes the source coordinate
// scale·(i+0.5) − 0.5 from a float32 scale and rounds only the fractional part
// to float32 (measured against torch 1.13: equal weights at every position);
// the float32 product is exact in float64, which reproduces that.
func linearTaps(in, out int) []tap {
	scale := float64(float32(in) / float32(out))
	taps := make([]tap, out)
	for i := range taps {
		src := max(scale*(float64(i)+0.5)-0.5, 0)
		i0 := int(src)
		i1 := i0
		if i0 < in-1 {
			i1 = i0 + 1
		}
		l1 := float32(min(max(src-float64(i0), 0), 1))
		taps[i] = tap{i0: i0, i1: i1, w0: 1 - l1, w1: l1}
	}
	return taps
}

// rowCache converts source rows to RGB in [0, 1] (as PIL's convert("RGB") and
// x/255 in float32), keeping the two most recent rows. Only the columns the
// horizontal taps read are converted.
type rowCache struct {
	img  image.Image
	b    image.Rectangle
	cols []int // source columns read, relative to b.Min.X, increasing
	cCol []int // YCbCr only: chroma offset of each column relative to column 0
	y    [2]int
	rows [2][]float32
	next int
}

var unit [256]float32

func init() {
	for i := range unit {
		unit[i] = float32(i) / 255
	}
}

func newRowCache(img image.Image, xs []tap) *rowCache {
	b := img.Bounds()
	c := &rowCache{img: img, b: b, y: [2]int{-1, -1}}
	seen := make([]bool, b.Dx())
	for _, t := range xs {
		seen[t.i0], seen[t.i1] = true, true
	}
	for x, ok := range seen {
		if ok {
			c.cols = append(c.cols, x)
		}
	}
	if m, ok := img.(*image.YCbCr); ok {
		// COffset is separable: column part + row part.
		base := m.COffset(b.Min.X, b.Min.Y)
		c.cCol = make([]int, b.Dx())
		for _, x := range c.cols {
			c.cCol[x] = m.COffset(b.Min.X+x, b.Min.Y) - base
		}
	}
	c.rows[0] = make([]float32, 3*b.Dx())
	c.rows[1] = make([]float32, 3*b.Dx())
	return c
}

func (c *rowCache) get(y int) []float32 {
	for k := range 2 {
		if c.y[k] == y {
			return c.rows[k]
		}
	}
	k := c.next
	c.next ^= 1
	c.y[k] = y
	c.fill(c.rows[k], c.b.Min.Y+y)
	return c.rows[k]
}

// fill writes row y's needed columns as RGB in [0, 1]: colour values without
// alpha, un-premultiplied, as PIL's convert("RGB") keeps them.
func (c *rowCache) fill(dst []float32, y int) {
	b := c.b
	switch m := c.img.(type) {
	case *image.NRGBA:
		p := m.Pix[m.PixOffset(b.Min.X, y):]
		for _, x := range c.cols {
			dst[3*x], dst[3*x+1], dst[3*x+2] = unit[p[4*x]], unit[p[4*x+1]], unit[p[4*x+2]]
		}
	case *image.YCbCr:
		yp := m.Y[m.YOffset(b.Min.X, y):]
		cp := m.COffset(b.Min.X, y)
		for _, x := range c.cols {
			ci := cp + c.cCol[x]
			r, g, bl := color.YCbCrToRGB(yp[x], m.Cb[ci], m.Cr[ci])
			dst[3*x], dst[3*x+1], dst[3*x+2] = unit[r], unit[g], unit[bl]
		}
	case *image.Gray:
		p := m.Pix[m.PixOffset(b.Min.X, y):]
		for _, x := range c.cols {
			v := unit[p[x]]
			dst[3*x], dst[3*x+1], dst[3*x+2] = v, v, v
		}
	case *image.RGBA:
		p := m.Pix[m.PixOffset(b.Min.X, y):]
		for _, x := range c.cols {
			if p[4*x+3] == 0xff {
				dst[3*x], dst[3*x+1], dst[3*x+2] = unit[p[4*x]], unit[p[4*x+1]], unit[p[4*x+2]]
				continue
			}
			n := color.NRGBAModel.Convert(color.RGBA{p[4*x], p[4*x+1], p[4*x+2], p[4*x+3]}).(color.NRGBA)
			dst[3*x], dst[3*x+1], dst[3*x+2] = unit[n.R], unit[n.G], unit[n.B]
		}
	default:
		for _, x := range c.cols {
			n := color.NRGBAModel.Convert(c.img.At(b.Min.X+x, y)).(color.NRGBA)
			dst[3*x], dst[3*x+1], dst[3*x+2] = unit[n.R], unit[n.G], unit[n.B]
		}
	}
}
