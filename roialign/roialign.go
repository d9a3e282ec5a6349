// Package roialign pools fixed-size features for regions of interest from FPN
// feature maps with the semantics of torchvision: roi_align (bilinear sampling
// on a grid of sampling_ratio² points per bin, spatial scale, the aligned
// half-pixel offset) and MultiScaleRoIAlign's assignment of each box to a level
// by its size. Work is split over RoIs across goroutines.
package roialign

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
)

// Feature is one image's feature map, [C, H, W] float32 in C order.
type Feature struct {
	Data                    []float32
	Channels, Height, Width int
	Scale                   float32 // spatial scale: feature pixels per image pixel (1/stride)
}

// Config is the manifest's roi_align section plus the degree of parallelism.
type Config struct {
	OutputSize     int  // S: the pooled output is S×S
	SamplingRatio  int  // sampling points per bin side; ≤ 0 means ceil(bin size), as torchvision
	Aligned        bool // shift box coordinates by -0.5 pixel (roi_align's aligned=True)
	CanonicalScale int  // MultiScaleRoIAlign's canonical box size (224)
	CanonicalLevel int  // and the level it maps to (4)
	Workers        int  // goroutines; ≤ 0 means GOMAXPROCS
}

// Errors returned by the poolers.
var (
	ErrConfig = errors.New("roialign: invalid configuration")
	ErrShape  = errors.New("roialign: feature shape mismatch")
)

func (c Config) validate() error {
	if c.OutputSize <= 0 {
		return fmt.Errorf("%w: output size %d", ErrConfig, c.OutputSize)
	}
	return nil
}

func (f Feature) validate() error {
	if f.Channels <= 0 || f.Height <= 0 || f.Width <= 0 || len(f.Data) != f.Channels*f.Height*f.Width {
		return fmt.Errorf("%w: %d values for [%d, %d, %d]", ErrShape, len(f.Data), f.Channels, f.Height, f.Width)
	}
	if !(f.Scale > 0) {
		return fmt.Errorf("%w: spatial scale %v", ErrConfig, f.Scale)
	}
	return nil
}

// InferScale is MultiScaleRoIAlign's inference of a level's spatial scale from
// its feature height and the (unpadded) image height: the nearest power of two.
func InferScale(featHeight, imageHeight int) float32 {
	approx := float32(float64(featHeight) / float64(imageHeight))
	return float32(math.Pow(2, math.RoundToEven(float64(float32(math.Log2(float64(approx)))))))
}

// LevelMapper assigns boxes to FPN levels by the FPN paper's equation (1), as
// torchvision's LevelMapper: floor(canonicalLevel + log2(sqrt(area)/canonicalScale) + 1e-6),
// clamped to [KMin, KMax]; Level returns the index from KMin.
type LevelMapper struct {
	KMin, KMax                     int
	CanonicalScale, CanonicalLevel int
}

// NewLevelMapper derives KMin and KMax from the first and last level's scale.
func NewLevelMapper(scales []float32, canonicalScale, canonicalLevel int) LevelMapper {
	k := func(s float32) int { return int(-float32(math.Log2(float64(s)))) }
	return LevelMapper{KMin: k(scales[0]), KMax: k(scales[len(scales)-1]),
		CanonicalScale: canonicalScale, CanonicalLevel: canonicalLevel}
}

// Level is the index (from KMin) of the level box is pooled from, computed in
// float32 as torchvision does.
func (m LevelMapper) Level(box [4]float32) int {
	area := float32(box[2]-box[0]) * float32(box[3]-box[1])
	s := float32(math.Sqrt(float64(area)))
	l := float32(math.Log2(float64(s / float32(m.CanonicalScale))))
	t := float32(float32(m.CanonicalLevel)+l) + float32(1e-6)
	t = float32(math.Floor(float64(t)))
	// torch.clamp; a NaN (degenerate box) stays NaN and converts to the
	// smallest int64, which is below KMin after the subtraction in torch; we
	// map it to the first level.
	if !(t >= float32(m.KMin)) {
		return 0
	}
	if t > float32(m.KMax) {
		t = float32(m.KMax)
	}
	return int(t) - m.KMin
}

// MultiScale pools every box from the level LevelMapper assigns it to (a single
// level is used for all boxes when there is one, as torchvision does) into dst,
// [N, C, S, S], which is grown if needed and returned. Boxes are in the image's
// pixels. Each level's Scale must be a power of two (see InferScale).
func MultiScale(dst []float32, levels []Feature, boxes [][4]float32, cfg Config) ([]float32, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(levels) == 0 {
		return nil, fmt.Errorf("%w: no levels", ErrConfig)
	}
	for i, f := range levels {
		if err := f.validate(); err != nil {
			return nil, fmt.Errorf("roialign: level %d: %w", i, err)
		}
		if f.Channels != levels[0].Channels {
			return nil, fmt.Errorf("%w: level %d has %d channels, level 0 %d", ErrShape, i, f.Channels, levels[0].Channels)
		}
	}
	assign := make([]int, len(boxes))
	if len(levels) > 1 {
		scales := make([]float32, len(levels))
		for i, f := range levels {
			scales[i] = f.Scale
		}
		m := NewLevelMapper(scales, cfg.CanonicalScale, cfg.CanonicalLevel)
		if m.KMax-m.KMin+1 != len(levels) {
			return nil, fmt.Errorf("%w: scales %v are not consecutive powers of two", ErrConfig, scales)
		}
		for i, b := range boxes {
			assign[i] = m.Level(b)
		}
	}
	dst = grow(dst, len(boxes)*levels[0].Channels*cfg.OutputSize*cfg.OutputSize)
	pool(dst, levels, boxes, assign, cfg)
	return dst, nil
}

// Align is torchvision.ops.roi_align on a single feature map: every box is
// pooled from feat into dst, [N, C, S, S], which is grown if needed and returned.
func Align(dst []float32, feat Feature, boxes [][4]float32, cfg Config) ([]float32, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := feat.validate(); err != nil {
		return nil, fmt.Errorf("roialign: %w", err)
	}
	dst = grow(dst, len(boxes)*feat.Channels*cfg.OutputSize*cfg.OutputSize)
	pool(dst, []Feature{feat}, boxes, make([]int, len(boxes)), cfg)
	return dst, nil
}

func grow(dst []float32, n int) []float32 {
	if cap(dst) < n {
		return make([]float32, n)
	}
	return dst[:n]
}

// pool splits the boxes over workers; each worker owns its sampling buffer.
func pool(dst []float32, levels []Feature, boxes [][4]float32, assign []int, cfg Config) {
	workers := cfg.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, len(boxes))
	per := levels[0].Channels * cfg.OutputSize * cfg.OutputSize
	if workers <= 1 {
		var buf []sample
		for i, b := range boxes {
			buf = alignOne(dst[i*per:(i+1)*per], levels[assign[i]], b, cfg, buf)
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (len(boxes) + workers - 1) / workers
	for start := 0; start < len(boxes); start += chunk {
		end := min(start+chunk, len(boxes))
		wg.Go(func() {
			var buf []sample
			for i := start; i < end; i++ {
				buf = alignOne(dst[i*per:(i+1)*per], levels[assign[i]], boxes[i], cfg, buf)
			}
		})
	}
	wg.Wait()
}

// sample is one bilinear sampling point: four feature offsets and weights
// (torchvision's PreCalc).
type sample struct {
	pos            [4]int32
	w1, w2, w3, w4 float32
}

// alignOne pools one box into out ([C, S, S]) following torchvision's CPU
// kernel operation by operation, in float32.
func alignOne(out []float32, f Feature, box [4]float32, cfg Config, buf []sample) []sample {
	s := cfg.OutputSize
	var offset float32
	if cfg.Aligned {
		offset = 0.5
	}
	startW := float32(box[0]*f.Scale) - offset
	startH := float32(box[1]*f.Scale) - offset
	endW := float32(box[2]*f.Scale) - offset
	endH := float32(box[3]*f.Scale) - offset
	roiW, roiH := endW-startW, endH-startH
	if !cfg.Aligned {
		roiW, roiH = max(roiW, 1), max(roiH, 1)
	}
	binH := roiH / float32(s)
	binW := roiW / float32(s)
	gridH, gridW := cfg.SamplingRatio, cfg.SamplingRatio
	if cfg.SamplingRatio <= 0 {
		gridH = int(math.Ceil(float64(roiH / float32(s))))
		gridW = int(math.Ceil(float64(roiW / float32(s))))
		// A box larger than the feature map (never one clipped to the image)
		// would otherwise ask for an unbounded grid.
		gridH = min(gridH, f.Height+1)
		gridW = min(gridW, f.Width+1)
	}
	count := float32(max(gridH*gridW, 1))

	n := s * s * gridH * gridW
	if cap(buf) < n {
		buf = make([]sample, n)
	}
	buf = buf[:n]
	height, width := f.Height, f.Width
	k := 0
	for ph := range s {
		for pw := range s {
			for iy := range gridH {
				yy := float32(startH+float32(float32(ph)*binH)) + float32(float32(float32(iy)+0.5)*binH)/float32(gridH)
				for ix := range gridW {
					xx := float32(startW+float32(float32(pw)*binW)) + float32(float32(float32(ix)+0.5)*binW)/float32(gridW)
					buf[k] = bilinear(yy, xx, height, width)
					k++
				}
			}
		}
	}

	hw := height * width
	for c := range f.Channels {
		in := f.Data[c*hw : (c+1)*hw]
		o := out[c*s*s : (c+1)*s*s]
		k := 0
		for bin := range s * s {
			var v float32
			for range gridH * gridW {
				p := &buf[k]
				v += float32(float32(float32(p.w1*in[p.pos[0]])+float32(p.w2*in[p.pos[1]]))+float32(p.w3*in[p.pos[2]])) + float32(p.w4*in[p.pos[3]])
				k++
			}
			o[bin] = v / count
		}
	}
	return buf
}

// bilinear is torchvision's pre_calc_for_bilinear_interpolate for one point.
func bilinear(y, x float32, height, width int) sample {
	// Outside the map (or NaN): contributes zero.
	if !(y >= -1 && y <= float32(height) && x >= -1 && x <= float32(width)) {
		return sample{}
	}
	y, x = max(y, 0), max(x, 0)
	yLow, xLow := int(y), int(x)
	var yHigh, xHigh int
	if yLow >= height-1 {
		yLow, yHigh = height-1, height-1
		y = float32(yLow)
	} else {
		yHigh = yLow + 1
	}
	if xLow >= width-1 {
		xLow, xHigh = width-1, width-1
		x = float32(xLow)
	} else {
		xHigh = xLow + 1
	}
	ly, lx := y-float32(yLow), x-float32(xLow)
	hy, hx := 1-ly, 1-lx
	return sample{
		pos: [4]int32{int32(yLow*width + xLow), int32(yLow*width + xHigh), int32(yHigh*width + xLow), int32(yHigh*width + xHigh)},
		w1:  hy * hx, w2: hy * lx, w3: ly * hx, w4: ly * lx,
	}
}
