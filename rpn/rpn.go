// Package rpn turns the region proposal network's raw per-level outputs into
// proposals exactly as torchvision's RegionProposalNetwork does at inference:
// anchors (AnchorGenerator), flattening of the head outputs
// (concat_box_prediction_layers), per-level top-n by logit, box decoding,
// clipping, minimum size, score threshold, NMS per level and the overall
// post-NMS top-n (filter_proposals). The numbers come from docs/bundle.md's
// manifest (anchors, rpn).
package rpn

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/vild/vild/boxes"
)

// Level is one FPN level's raw RPN head output for a single image, in the
// layout of torchvision's RPNHead (the bundle's rpn_logits_L and rpn_deltas_L
// without the batch axis).
type Level struct {
	Logits        []float32 // [A, H, W] objectness logits, A = anchors per location
	Deltas        []float32 // [4A, H, W] box deltas, 4 per anchor: dx, dy, dw, dh
	Height, Width int       // feature map size H, W
	Sizes         []float32 // the level's anchor sizes
}

// Config holds the manifest's anchor and rpn settings.
type Config struct {
	AspectRatios   []float32  // anchor aspect ratios (height / width)
	PreNMSTopN     int        // proposals kept per level before NMS, by logit
	PostNMSTopN    int        // proposals kept overall after NMS
	NMSIoU         float32    // NMS IoU threshold, per level
	MinSize        float32    // proposals with a side below this are dropped
	ScoreThreshold float32    // proposals with sigmoid(logit) below this are dropped
	Weights        [4]float32 // box coder weights
}

// Image is the size of the network input: the resized image (proposals are
// clipped to it) and the padded tensor (anchor strides derive from it).
type Image struct {
	Height, Width             int // resized, unpadded
	PaddedHeight, PaddedWidth int // the backbone's input tensor
}

// Proposals are the kept proposals in decreasing score order.
type Proposals struct {
	Boxes  [][4]float32 // x1, y1, x2, y2 in the resized image's pixels
	Logits []float32    // objectness logits
	Scores []float32    // sigmoid of the logits, as torchvision returns them
	Levels []int        // index of the level each proposal came from
}

// Errors returned by Propose.
var (
	ErrConfig = errors.New("rpn: invalid configuration")
	ErrShape  = errors.New("rpn: head output shape does not match the level")
)

func (c Config) validate() error {
	switch {
	case len(c.AspectRatios) == 0:
		return fmt.Errorf("%w: no aspect ratios", ErrConfig)
	case c.PreNMSTopN <= 0 || c.PostNMSTopN <= 0:
		return fmt.Errorf("%w: top-n must be positive (pre %d, post %d)", ErrConfig, c.PreNMSTopN, c.PostNMSTopN)
	case c.Weights[0] == 0 || c.Weights[1] == 0 || c.Weights[2] == 0 || c.Weights[3] == 0:
		return fmt.Errorf("%w: zero box coder weight %v", ErrConfig, c.Weights)
	}
	return nil
}

// candidate is one anchor that survived a level's top-n.
type candidate struct {
	box   [4]float32
	logit float32
	score float32
	level int
}

// Propose runs torchvision's filter_proposals on one image's RPN outputs.
func Propose(levels []Level, cfg Config, img Image) (*Proposals, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if img.Height <= 0 || img.Width <= 0 || img.PaddedHeight < img.Height || img.PaddedWidth < img.Width {
		return nil, fmt.Errorf("%w: image %+v", ErrConfig, img)
	}
	coder := boxes.NewCoder(cfg.Weights)
	var cands []candidate
	var top []int
	for li, lv := range levels {
		na := len(cfg.AspectRatios) * len(lv.Sizes)
		hw := lv.Height * lv.Width
		if na == 0 || lv.Height <= 0 || lv.Width <= 0 || len(lv.Logits) != na*hw || len(lv.Deltas) != 4*na*hw {
			return nil, fmt.Errorf("%w: level %d: %d anchors, %dx%d, %d logits, %d deltas",
				ErrShape, li, na, lv.Height, lv.Width, len(lv.Logits), len(lv.Deltas))
		}
		cell := CellAnchors(lv.Sizes, cfg.AspectRatios)
		sy, sx := Strides(lv.Height, lv.Width, img.PaddedHeight, img.PaddedWidth)
		top = topN(lv.Logits, na, hw, cfg.PreNMSTopN, top)
		for _, flat := range top {
			// flat indexes torchvision's flattened order (y, x, anchor).
			loc, a := flat/na, flat%na
			y, x := loc/lv.Width, loc%lv.Width
			logit := lv.Logits[a*hw+loc]
			c := cell[a]
			ox, oy := float32(x*sx), float32(y*sy)
			anchor := [4]float32{ox + c[0], oy + c[1], ox + c[2], oy + c[3]}
			d := [4]float32{
				lv.Deltas[(4*a+0)*hw+loc], lv.Deltas[(4*a+1)*hw+loc],
				lv.Deltas[(4*a+2)*hw+loc], lv.Deltas[(4*a+3)*hw+loc],
			}
			box := boxes.Clip(coder.Decode(d, anchor), float32(img.Width), float32(img.Height))
			if !boxes.Large(box, cfg.MinSize) {
				continue
			}
			score := Sigmoid(logit)
			if !(score >= cfg.ScoreThreshold) {
				continue
			}
			cands = append(cands, candidate{box: box, logit: logit, score: score, level: li})
		}
	}
	bx := make([][4]float32, len(cands))
	sc := make([]float32, len(cands))
	lvl := make([]int, len(cands))
	for i, c := range cands {
		bx[i], sc[i], lvl[i] = c.box, c.score, c.level
	}
	keep := boxes.BatchedNMS(bx, sc, lvl, cfg.NMSIoU)
	keep = keep[:min(len(keep), cfg.PostNMSTopN)]
	p := &Proposals{
		Boxes:  make([][4]float32, len(keep)),
		Logits: make([]float32, len(keep)),
		Scores: make([]float32, len(keep)),
		Levels: make([]int, len(keep)),
	}
	for k, i := range keep {
		c := cands[i]
		p.Boxes[k], p.Logits[k], p.Scores[k], p.Levels[k] = c.box, c.logit, c.score, c.level
	}
	return p, nil
}

// Sigmoid is torch.sigmoid in float32: 1 / (1 + exp(-x)) rounded per operation,
// so large logits saturate to exactly 1 where torch's do.
func Sigmoid(x float32) float32 {
	e := float32(math.Exp(float64(-x)))
	return 1 / (1 + e)
}

// topN returns the flattened (y, x, anchor) indices of the n largest logits of a
// level stored as [A, H·W], in decreasing logit order, ties in increasing index
// order. dst is reused.
func topN(logits []float32, na, hw, n int, dst []int) []int {
	total := na * hw
	n = min(n, total)
	dst = dst[:0]
	val := func(flat int) float32 { return logits[(flat%na)*hw+flat/na] }
	// better reports whether flat index i ranks before j.
	better := func(i, j int) bool {
		vi, vj := val(i), val(j)
		return vi > vj || (vi == vj && i < j)
	}
	if n == total {
		for i := range total {
			dst = append(dst, i)
		}
	} else {
		// A min-heap of the n best so far: dst[0] is the worst kept.
		for i := range total {
			if len(dst) < n {
				dst = append(dst, i)
				siftUp(dst, len(dst)-1, better)
			} else if better(i, dst[0]) {
				dst[0] = i
				siftDown(dst, 0, better)
			}
		}
	}
	slices.SortFunc(dst, func(i, j int) int {
		if better(i, j) {
			return -1
		}
		if better(j, i) {
			return 1
		}
		return 0
	})
	return dst
}

// The heap keeps its worst element at the root: a parent is never better
// than its children.
func siftUp(h []int, k int, better func(i, j int) bool) {
	for k > 0 {
		p := (k - 1) / 2
		if !better(h[p], h[k]) {
			return
		}
		h[p], h[k] = h[k], h[p]
		k = p
	}
}

func siftDown(h []int, k int, better func(i, j int) bool) {
	for {
		c := 2*k + 1
		if c >= len(h) {
			return
		}
		if c+1 < len(h) && better(h[c], h[c+1]) {
			c++
		}
		if !better(h[k], h[c]) {
			return
		}
		h[k], h[c] = h[c], h[k]
		k = c
	}
}
