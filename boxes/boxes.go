// Package boxes is the box arithmetic of the detector, written to give the same
// numbers as torchvision: intersection over union, non-maximum suppression (plain
// and label-wise), the R-CNN box coder's decode, clipping to an image and removal
// of small boxes. Boxes are [4]float32 as (x1, y1, x2, y2) in pixels; every
// function here is pure.
package boxes

import (
	"math"
	"sort"
)

// Area is the area of b, (x2-x1)*(y2-y1), as torchvision's box_area computes it
// (negative for inverted boxes).
func Area(b [4]float32) float32 {
	return float32(b[2]-b[0]) * float32(b[3]-b[1])
}

// IoU is the intersection over union of a and b, computed in float32 in the
// order torchvision's box_iou and nms kernels use. Two empty boxes give NaN, as
// in torchvision (0/0).
func IoU(a, b [4]float32) float32 {
	return iou(a, b, Area(a), Area(b))
}

func iou(a, b [4]float32, areaA, areaB float32) float32 {
	w := min(a[2], b[2]) - max(a[0], b[0])
	h := min(a[3], b[3]) - max(a[1], b[1])
	if w <= 0 || h <= 0 {
		// torchvision computes max(0,w)*max(0,h) = 0 and divides; 0/union is 0
		// unless union is 0 too.
		if areaA+areaB == 0 {
			return float32(math.NaN())
		}
		return 0
	}
	inter := float32(w * h)
	return inter / (areaA + areaB - inter)
}

// NMS is torchvision.ops.nms: boxes are visited in decreasing score order (ties
// in index order, as torchvision's stable sort) and every later box whose IoU
// with a kept box is greater than iouThreshold is suppressed. It returns the
// indices of the kept boxes in decreasing score order.
func NMS(boxes [][4]float32, scores []float32, iouThreshold float32) []int {
	order := sortedByScore(scores, nil)
	return nmsOrdered(boxes, order, iouThreshold, nil)
}

// nmsOrdered runs NMS over boxes visited in the given order; keep is appended to.
func nmsOrdered(boxes [][4]float32, order []int, iouThreshold float32, keep []int) []int {
	// Gather the boxes in visiting order so the inner loop reads memory linearly.
	n := len(order)
	sorted := make([][4]float32, n)
	areas := make([]float32, n)
	for k, i := range order {
		sorted[k] = boxes[i]
		areas[k] = Area(boxes[i])
	}
	suppressed := make([]bool, n)
	for a := range n {
		if suppressed[a] {
			continue
		}
		keep = append(keep, order[a])
		ba, aa := sorted[a], areas[a]
		for b := a + 1; b < n; b++ {
			if suppressed[b] {
				continue
			}
			bb := sorted[b]
			// Branch-free as torchvision's kernel: a zero intersection gives
			// IoU 0 (or NaN for two empty boxes), which never suppresses.
			w := max(min(ba[2], bb[2])-max(ba[0], bb[0]), 0)
			h := max(min(ba[3], bb[3])-max(ba[1], bb[1]), 0)
			inter := float32(w * h)
			suppressed[b] = inter/(aa+areas[b]-inter) > iouThreshold
		}
	}
	return keep
}

// sortedByScore returns the indices of scores in decreasing order, ties in
// increasing index order. idx is reused when large enough.
func sortedByScore(scores []float32, idx []int) []int {
	idx = idx[:0]
	for i := range scores {
		idx = append(idx, i)
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	return idx
}

// BatchedNMS is torchvision.ops.batched_nms: NMS run independently among boxes
// of the same class; it returns the kept indices in decreasing score order
// (ties in index order).
func BatchedNMS(boxes [][4]float32, scores []float32, classes []int, iouThreshold float32) []int {
	order := sortedByScore(scores, nil)
	// Group the score-ordered indices by class, keeping the order inside a class.
	byClass := map[int][]int{}
	var classOrder []int
	for _, i := range order {
		c := classes[i]
		if _, ok := byClass[c]; !ok {
			classOrder = append(classOrder, c)
		}
		byClass[c] = append(byClass[c], i)
	}
	keep := make([]int, 0, len(order))
	for _, c := range classOrder {
		keep = nmsOrdered(boxes, byClass[c], iouThreshold, keep)
	}
	// Merge back into global score order: sort the kept indices by the position
	// they had in order.
	rank := make([]int, len(scores))
	for r, i := range order {
		rank[i] = r
	}
	sort.Slice(keep, func(a, b int) bool { return rank[keep[a]] < rank[keep[b]] })
	return keep
}

// DefaultClip is torchvision's bbox_xform_clip, log(1000/16): the largest dw and
// dh the coder exponentiates, so no box grows more than 62.5 times.
var DefaultClip = float32(math.Log(1000.0 / 16))

// Coder is torchvision's BoxCoder: it decodes (dx, dy, dw, dh) deltas relative to
// reference boxes, dividing them by Weights first.
type Coder struct {
	Weights [4]float32 // wx, wy, ww, wh
	Clip    float32    // upper bound of dw and dh after weighting
}

// NewCoder returns a coder with torchvision's default clip.
func NewCoder(weights [4]float32) Coder {
	return Coder{Weights: weights, Clip: DefaultClip}
}

// Decode applies delta to the reference box ref, in float32 with torchvision's
// order of operations.
func (c Coder) Decode(delta, ref [4]float32) [4]float32 {
	w := ref[2] - ref[0]
	h := ref[3] - ref[1]
	cx := ref[0] + float32(0.5*w)
	cy := ref[1] + float32(0.5*h)
	dx := delta[0] / c.Weights[0]
	dy := delta[1] / c.Weights[1]
	dw := min(delta[2]/c.Weights[2], c.Clip)
	dh := min(delta[3]/c.Weights[3], c.Clip)
	px := float32(dx*w) + cx
	py := float32(dy*h) + cy
	pw := float32(float32(math.Exp(float64(dw))) * w)
	ph := float32(float32(math.Exp(float64(dh))) * h)
	hw := float32(0.5 * pw)
	hh := float32(0.5 * ph)
	return [4]float32{px - hw, py - hh, px + hw, py + hh}
}

// Clip clamps b's x coordinates to [0, width] and y coordinates to [0, height]
// (torchvision's clip_boxes_to_image).
func Clip(b [4]float32, width, height float32) [4]float32 {
	return [4]float32{
		clamp(b[0], width), clamp(b[1], height),
		clamp(b[2], width), clamp(b[3], height),
	}
}

func clamp(v, hi float32) float32 {
	// NaN stays NaN, as in torch.clamp.
	if v < 0 {
		return 0
	}
	if v > hi {
		return hi
	}
	return v
}

// Large reports whether both sides of b are at least minSize; torchvision's
// remove_small_boxes keeps exactly these boxes.
func Large(b [4]float32, minSize float32) bool {
	return b[2]-b[0] >= minSize && b[3]-b[1] >= minSize
}

// RemoveSmall returns the indices of the boxes whose sides are both at least
// minSize, in increasing order.
func RemoveSmall(boxes [][4]float32, minSize float32) []int {
	keep := make([]int, 0, len(boxes))
	for i, b := range boxes {
		if Large(b, minSize) {
			keep = append(keep, i)
		}
	}
	return keep
}
