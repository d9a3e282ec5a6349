package eval

import (
	"math"
	"sort"
)

// The calibration measures of `vild calibration` (docs/evaluation.md
// "Calibration"): how well a detection's score says how often it is right,
// and how a name's scores on its true boxes move with the vocabulary.

// Scored is one reported detection: its score and whether it was correct.
type Scored struct {
	Score   float64
	Correct bool
}

// ECE is the expected calibration error of the detections over bins
// equal-width bins of [0, 1] (a score of 1 falls in the last): the mean over
// bins, weighted by the bin's share of the detections, of |accuracy − mean
// score|. It is NaN without detections.
func ECE(dets []Scored, bins int) float64 {
	if len(dets) == 0 || bins < 1 {
		return math.NaN()
	}
	n := make([]float64, bins)
	correct := make([]float64, bins)
	sum := make([]float64, bins)
	for _, d := range dets {
		b := min(max(int(d.Score*float64(bins)), 0), bins-1)
		n[b]++
		sum[b] += d.Score
		if d.Correct {
			correct[b]++
		}
	}
	var ece float64
	for b := range bins {
		if n[b] > 0 {
			ece += n[b] / float64(len(dets)) * math.Abs(correct[b]/n[b]-sum[b]/n[b])
		}
	}
	return ece
}

// Box is a ground-truth or detected box with its label: x1, y1, x2, y2.
type Box struct {
	Label string
	Box   [4]float64
}

// MatchGreedy matches one image's detections to its ground truth: by
// decreasing score, a detection is correct when some not yet matched
// ground-truth box of its label has IoU ≥ iou with it, and it takes the one
// of highest IoU. It returns each detection's correctness (in dets' order)
// and each ground-truth box's matched score (0 when none matched it).
func MatchGreedy(gt []Box, dets []Box, scores []float64, iou float64) (correct []bool, gtScore []float64) {
	correct = make([]bool, len(dets))
	gtScore = make([]float64, len(gt))
	used := make([]bool, len(gt))
	order := make([]int, len(dets))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return scores[order[a]] > scores[order[b]] })
	for _, d := range order {
		best, bestIoU := -1, iou
		for g, b := range gt {
			if used[g] || b.Label != dets[d].Label {
				continue
			}
			if o := boxIoU(dets[d].Box, b.Box); o >= bestIoU {
				best, bestIoU = g, o
			}
		}
		if best >= 0 {
			used[best] = true
			correct[d] = true
			gtScore[best] = scores[d]
		}
	}
	return correct, gtScore
}

func boxIoU(a, b [4]float64) float64 {
	w := math.Min(a[2], b[2]) - math.Max(a[0], b[0])
	h := math.Min(a[3], b[3]) - math.Max(a[1], b[1])
	if w <= 0 || h <= 0 {
		return 0
	}
	inter := w * h
	union := (a[2]-a[0])*(a[3]-a[1]) + (b[2]-b[0])*(b[3]-b[1]) - inter
	if union <= 0 {
		return 0
	}
	return inter / union
}

// TrueBoxStats summarises the ground-truth boxes' matched scores (0: not
// found): the median score of the found ones (NaN when none was found) and
// the share of all whose score is at least threshold.
func TrueBoxStats(gtScore []float64, threshold float64) (median, recall float64) {
	var found []float64
	hits := 0
	for _, s := range gtScore {
		if s > 0 {
			found = append(found, s)
		}
		if s > 0 && s >= threshold {
			hits++
		}
	}
	if len(gtScore) == 0 {
		return math.NaN(), math.NaN()
	}
	recall = float64(hits) / float64(len(gtScore))
	if len(found) == 0 {
		return math.NaN(), recall
	}
	sort.Float64s(found)
	m := len(found) / 2
	if len(found)%2 == 1 {
		return found[m], recall
	}
	return (found[m-1] + found[m]) / 2, recall
}
