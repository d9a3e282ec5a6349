package eval

import (
	"math"
	"testing"
)

// ECE by hand: 15 bins; four detections at 0.9 (bin 13), three right; two at
// 0.1 (bin 1), none right; one at 1.0 (bin 14, the last), right.
// |0.75 − 0.9|·4/7 + |0 − 0.1|·2/7 + |1 − 1|·1/7 = (0.6 + 0.2)/7.
func TestECEByHand(t *testing.T) {
	dets := []Scored{{0.9, true}, {0.9, true}, {0.9, false}, {0.9, true}, {0.1, false}, {0.1, false}, {1, true}}
	if got, want := ECE(dets, 15), 0.8/7; math.Abs(got-want) > 1e-12 {
		t.Fatalf("ECE %v, want %v", got, want)
	}
	// one bin: |accuracy − mean score|
	if got, want := ECE(dets, 1), math.Abs(4.0/7-(3.6+0.2+1)/7); math.Abs(got-want) > 1e-12 {
		t.Fatalf("ECE with one bin %v, want %v", got, want)
	}
	// perfectly calibrated bins
	if got := ECE([]Scored{{0.5, true}, {0.5, false}}, 15); got != 0 {
		t.Fatalf("ECE %v, want 0", got)
	}
	if !math.IsNaN(ECE(nil, 15)) {
		t.Fatal("ECE without detections is not NaN")
	}
}

func TestMatchGreedy(t *testing.T) {
	gt := []Box{{"cat", [4]float64{0, 0, 10, 10}}, {"cat", [4]float64{20, 0, 30, 10}}, {"dog", [4]float64{0, 20, 10, 30}}}
	dets := []Box{
		{"cat", [4]float64{0, 0, 10, 9}},   // 0.9 IoU with cat 0, lower score
		{"cat", [4]float64{0, 0, 10, 10}},  // exact, higher score: takes cat 0
		{"dog", [4]float64{20, 0, 30, 10}}, // a dog where a cat is: wrong label
		{"cat", [4]float64{20, 0, 30, 4}},  // 0.4 IoU: too little
		{"dog", [4]float64{0, 20, 10, 30}},
	}
	scores := []float64{0.5, 0.8, 0.9, 0.7, 0.2}
	correct, gtScore := MatchGreedy(gt, dets, scores, 0.5)
	wantCorrect := []bool{false, true, false, false, true}
	for i := range correct {
		if correct[i] != wantCorrect[i] {
			t.Fatalf("detection %d correct %v, want %v", i, correct[i], wantCorrect[i])
		}
	}
	if gtScore[0] != 0.8 || gtScore[1] != 0 || gtScore[2] != 0.2 {
		t.Fatalf("ground-truth scores %v", gtScore)
	}
	med, rec := TrueBoxStats(gtScore, 0.3)
	if med != 0.5 || math.Abs(rec-1.0/3) > 1e-12 {
		t.Fatalf("median %v recall %v, want 0.5 and 1/3", med, rec)
	}
}
