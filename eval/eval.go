// Package eval measures detections against COCO ground truth: COCO-style box
// AP@[.5:.95] and AP50 per category, and their means over the novel, base and
// all categories that have ground truth. It is training/vildtrain/evaluate/cocoeval.py
// in Go, operation for operation, so `vild eval` and the Python table agree:
//
//   - per image and category, detections are sorted by score (stable, so
//     equal scores keep the detector's order) and cut to MaxDetections;
//   - for each IoU threshold t in IoUThresholds, each detection in score order
//     is matched to the unmatched ground truth with the highest IoU >= t (the
//     last such box on ties, as pycocotools); unmatched detections are false
//     positives; there are no crowd or ignored boxes;
//   - per category, the detections of all images (in ascending image id order)
//     are merged and sorted by score (stable), precision is made non-increasing
//     from the right and sampled at the 101 RecallPoints (0 beyond the last
//     reached recall); AP is the mean;
//   - categories without ground truth are left out of every mean.
//
// Detections on images the ground truth does not list count as false
// positives (as in the Python code); detections of unlisted categories are
// ignored. Golden cases written by testdata/gen_golden.py with the Python
// module check the two agree within 1e-9.
package eval

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
)

// MaxDetections is COCO's maxDets: detections kept per image and category.
const MaxDetections = 100

// IoUThresholds are 0.50:0.05:0.95 (numpy.linspace(0.5, 0.95, 10), bit for bit).
var IoUThresholds = linspace(0.5, 0.95, 10)

// RecallPoints are 0:0.01:1 (numpy.linspace(0, 1, 101), bit for bit).
var RecallPoints = linspace(0, 1, 101)

// linspace is numpy.linspace: i*step + start, the last point set to stop.
func linspace(start, stop float64, n int) []float64 {
	step := (stop - start) / float64(n-1)
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(float64(i)*step) + start
	}
	out[n-1] = stop
	return out
}

// CategoryAP is the result of one category.
type CategoryAP struct {
	ID    int64
	Name  string
	Split string
	NumGT int
	// AP per IoU threshold; NaN when the category has no ground truth.
	AP []float64
}

// Mean is AP@[.5:.95].
func (c CategoryAP) Mean() float64 { return pairwiseSum(c.AP) / float64(len(c.AP)) }

// AP50 is the AP at IoU 0.5.
func (c CategoryAP) AP50() float64 { return c.AP[0] }

// Group is a mean over the categories of a group that have ground truth.
type Group struct {
	AP         float64 // AP@[.5:.95]; NaN when no category has ground truth
	AP50       float64 // NaN when no category has ground truth
	Categories int     // categories with ground truth
}

// MarshalJSON writes NaN as null.
func (g Group) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		AP         *float64 `json:"AP"`
		AP50       *float64 `json:"AP50"`
		Categories int      `json:"categories"`
	}{finite(g.AP), finite(g.AP50), g.Categories})
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// Summary holds the novel, base and all means.
type Summary struct {
	Novel Group `json:"novel"`
	Base  Group `json:"base"`
	All   Group `json:"all"`
}

// Result is an evaluation: every category in the file's order and the summary.
type Result struct {
	Categories []CategoryAP
	Summary    Summary
}

// IoUType is what detections are matched by: boxes or instance masks.
type IoUType string

const (
	BBox IoUType = "bbox"
	Segm IoUType = "segm" // mask IoU: |d ∩ g| / |d ∪ g| in pixels, 0 for an empty union
)

// ErrNoMasks: mask AP of ground truth or detections without masks.
var ErrNoMasks = errors.New("eval: segm needs a mask (an RLE) on every annotation and detection")

// Evaluate scores detections against the ground truth by box IoU. Several
// entries with the same image id are merged in order.
func Evaluate(gt *COCO, dets []ImageDetections) *Result {
	res, _ := EvaluateType(gt, dets, BBox)
	return res
}

// EvaluateType is Evaluate by box or mask IoU (cocoeval.py's iou_type).
func EvaluateType(gt *COCO, dets []ImageDetections, iouType IoUType) (*Result, error) {
	if iouType != BBox && iouType != Segm {
		return nil, fmt.Errorf("eval: iou type %q, want bbox or segm", iouType)
	}
	segm := iouType == Segm
	T := len(IoUThresholds)
	catIndex := make(map[int64]int, len(gt.Categories))
	for i, c := range gt.Categories {
		catIndex[c.ID] = i
	}
	gtBy := map[int64]map[int][][4]float64{} // image -> category -> boxes
	gtSegm := map[int64]map[int][][]int{}    // image -> category -> masks (segm)
	numGT := make([]int, len(gt.Categories))
	imageSet := map[int64]bool{}
	for _, im := range gt.Images {
		imageSet[im.ID] = true
	}
	for _, a := range gt.Annotations {
		k, ok := catIndex[a.CategoryID]
		if !ok {
			continue
		}
		imageSet[a.ImageID] = true
		m := gtBy[a.ImageID]
		if m == nil {
			m = map[int][][4]float64{}
			gtBy[a.ImageID] = m
		}
		m[k] = append(m[k], a.BBox)
		numGT[k]++
		if segm {
			if a.Segm == nil {
				return nil, fmt.Errorf("%w: annotation %d has none", ErrNoMasks, a.ID)
			}
			if gtSegm[a.ImageID] == nil {
				gtSegm[a.ImageID] = map[int][][]int{}
			}
			gtSegm[a.ImageID][k] = append(gtSegm[a.ImageID][k], a.Segm)
		}
	}
	type catDets struct {
		boxes  [][4]float64
		segms  [][]int
		scores []float64
	}
	dtBy := map[int64]map[int]*catDets{} // image -> category -> detections in input order
	dtOrder := map[int64][]int{}         // image -> categories in first-seen order
	for _, d := range dets {
		imageSet[d.ImageID] = true
		for _, x := range d.Detections {
			k, ok := catIndex[x.CategoryID]
			if !ok {
				continue
			}
			m := dtBy[d.ImageID]
			if m == nil {
				m = map[int]*catDets{}
				dtBy[d.ImageID] = m
			}
			cd := m[k]
			if cd == nil {
				cd = &catDets{}
				m[k] = cd
				dtOrder[d.ImageID] = append(dtOrder[d.ImageID], k)
			}
			if segm && x.Segm == nil {
				return nil, fmt.Errorf("%w: a detection on image %d has none", ErrNoMasks, d.ImageID)
			}
			cd.boxes = append(cd.boxes, x.BBox)
			cd.segms = append(cd.segms, x.Segm)
			cd.scores = append(cd.scores, x.Score)
		}
	}
	imageIDs := make([]int64, 0, len(imageSet))
	for id := range imageSet {
		imageIDs = append(imageIDs, id)
	}
	slices.Sort(imageIDs)

	scores := make([][]float64, len(gt.Categories)) // per category: kept scores, image by image
	tps := make([][][]bool, len(gt.Categories))     // per category: [T][D], image by image
	for k := range tps {
		tps[k] = make([][]bool, T)
	}
	for _, img := range imageIDs {
		for _, k := range dtOrder[img] {
			cd := dtBy[img][k]
			gts := gtBy[img][k]
			iouOf := func(d, g int) float64 { return iou(cd.boxes[d], gts[g]) }
			if segm {
				gs := gtSegm[img][k]
				iouOf = func(d, g int) float64 { return RunsIoU(cd.segms[d], gs[g]) }
			}
			s, tp := matchImage(cd.scores, len(gts), iouOf)
			scores[k] = append(scores[k], s...)
			for t := range T {
				tps[k][t] = append(tps[k][t], tp[t]...)
			}
		}
	}
	res := &Result{Categories: make([]CategoryAP, len(gt.Categories))}
	for k, c := range gt.Categories {
		res.Categories[k] = CategoryAP{ID: c.ID, Name: c.Name, Split: c.Split, NumGT: numGT[k],
			AP: averagePrecision(scores[k], tps[k], numGT[k])}
	}
	res.Summary = Summary{
		Novel: summarize(res.Categories, func(c CategoryAP) bool { return c.Split == "novel" }),
		Base:  summarize(res.Categories, func(c CategoryAP) bool { return c.Split == "base" }),
		All:   summarize(res.Categories, func(CategoryAP) bool { return true }),
	}
	return res, nil
}

// RunsIoU is the IoU of two masks of one image given as COCO run lengths
// (pycocotools' rleIou without crowd): 0 when the union is empty.
func RunsIoU(a, b []int) float64 {
	inter, areaA, areaB := 0, 0, 0
	for i, r := range a {
		if i%2 == 1 {
			areaA += r
		}
	}
	for i, r := range b {
		if i%2 == 1 {
			areaB += r
		}
	}
	// Walk both run lists: at each step the shorter remaining run ends.
	i, j := 0, 0
	ra, rb := 0, 0 // remaining lengths of the current runs
	if len(a) > 0 {
		ra = a[0]
	}
	if len(b) > 0 {
		rb = b[0]
	}
	for i < len(a) && j < len(b) {
		n := min(ra, rb)
		if i%2 == 1 && j%2 == 1 {
			inter += n
		}
		ra -= n
		rb -= n
		for ra == 0 && i < len(a) {
			if i++; i < len(a) {
				ra = a[i]
			}
		}
		for rb == 0 && j < len(b) {
			if j++; j < len(b) {
				rb = b[j]
			}
		}
	}
	union := areaA + areaB - inter
	if union > 0 {
		return float64(inter) / max(float64(union), 1e-12)
	}
	return 0
}

// iou is cocoeval.py's iou_xywh for one pair, with its order of operations
// (the conversions stop fused multiply-adds).
func iou(d, g [4]float64) float64 {
	dx2, dy2 := d[0]+d[2], d[1]+d[3]
	gx2, gy2 := g[0]+g[2], g[1]+g[3]
	iw := max(min(dx2, gx2)-max(d[0], g[0]), 0)
	ih := max(min(dy2, gy2)-max(d[1], g[1]), 0)
	inter := iw * ih
	union := float64(d[2]*d[3]) + float64(g[2]*g[3]) - inter
	if union > 0 {
		return inter / max(union, 1e-12)
	}
	return 0
}

// matchImage is cocoeval.py's match_image: one image and category, with
// numGT ground truths and iouOf(detection, ground truth) by input index.
// It returns the kept scores in score order and tp[t][d].
func matchImage(scores []float64, numGT int, iouOf func(d, g int) float64) ([]float64, [][]bool) {
	order := make([]int, len(scores))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return scores[order[a]] > scores[order[b]] })
	if len(order) > MaxDetections {
		order = order[:MaxDetections]
	}
	ious := make([][]float64, len(order))
	kept := make([]float64, len(order))
	for d, i := range order {
		kept[d] = scores[i]
		ious[d] = make([]float64, numGT)
		for g := range numGT {
			ious[d][g] = iouOf(i, g)
		}
	}
	one, eps := 1.0, 1e-10
	tp := make([][]bool, len(IoUThresholds))
	taken := make([]bool, numGT)
	for ti, t := range IoUThresholds {
		tp[ti] = make([]bool, len(order))
		clear(taken)
		for d := range order {
			best, m := min(t, one-eps), -1
			for g := range numGT {
				if taken[g] || ious[d][g] < best {
					continue
				}
				best, m = ious[d][g], g
			}
			if m >= 0 {
				taken[m] = true
				tp[ti][d] = true
			}
		}
	}
	return kept, tp
}

// spacing1 is numpy.spacing(1).
var spacing1 = math.Nextafter(1, 2) - 1

// averagePrecision is cocoeval.py's average_precision for one category.
func averagePrecision(scores []float64, tp [][]bool, numGT int) []float64 {
	T := len(IoUThresholds)
	out := make([]float64, T)
	if numGT == 0 {
		for t := range out {
			out[t] = math.NaN()
		}
		return out
	}
	if len(scores) == 0 {
		return out
	}
	order := make([]int, len(scores))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return scores[order[a]] > scores[order[b]] })
	n := len(order)
	rc, pr, q := make([]float64, n), make([]float64, n), make([]float64, len(RecallPoints))
	for t := range T {
		var tpSum, fpSum float64
		for j, i := range order {
			if tp[t][i] {
				tpSum++
			} else {
				fpSum++
			}
			rc[j] = tpSum / float64(numGT)
			pr[j] = tpSum / (tpSum + fpSum + spacing1)
		}
		for j := n - 2; j >= 0; j-- {
			pr[j] = max(pr[j], pr[j+1])
		}
		for r, p := range RecallPoints {
			// numpy.searchsorted(rc, p, side="left"): the first j with rc[j] >= p
			j := sort.Search(n, func(j int) bool { return rc[j] >= p })
			if j < n {
				q[r] = pr[j]
			} else {
				q[r] = 0
			}
		}
		out[t] = pairwiseSum(q) / float64(len(q))
	}
	return out
}

// summarize is cocoeval.py's summarize for one group.
func summarize(cats []CategoryAP, in func(CategoryAP) bool) Group {
	var all, at50 []float64
	for _, c := range cats {
		if in(c) && !math.IsNaN(c.AP[0]) {
			all = append(all, c.AP...)
			at50 = append(at50, c.AP[0])
		}
	}
	if len(at50) == 0 {
		return Group{AP: math.NaN(), AP50: math.NaN()}
	}
	return Group{AP: pairwiseSum(all) / float64(len(all)), AP50: pairwiseSum(at50) / float64(len(at50)),
		Categories: len(at50)}
}

// pairwiseSum is numpy's pairwise summation (what ndarray.mean adds with), so
// means agree with the Python code to the last bit, not only within 1e-9.
func pairwiseSum(a []float64) float64 {
	const block = 128
	n := len(a)
	switch {
	case n < 8:
		s := 0.0
		for _, v := range a {
			s += v
		}
		return s
	case n <= block:
		var r [8]float64
		copy(r[:], a[:8])
		i := 8
		for ; i < n-n%8; i += 8 {
			for j := range r {
				r[j] += a[i+j]
			}
		}
		s := (r[0] + r[1]) + (r[2] + r[3]) + ((r[4] + r[5]) + (r[6] + r[7]))
		for ; i < n; i++ {
			s += a[i]
		}
		return s
	default:
		n2 := n / 2
		n2 -= n2 % 8
		return pairwiseSum(a[:n2]) + pairwiseSum(a[n2:])
	}
}
