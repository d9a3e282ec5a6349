package scoring

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/vild/vild/detector"
)

// stableScene is a model whose reference vocabulary is the first ref
// classes of a random scene of k classes, τ = 0.05 so that probabilities are
// not all 0 or 1.
func stableScene(t *testing.T, k, ref int) (*Model, *detector.Regions, *detector.Vocabulary) {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	const d = 16
	regions, vocab := randomScene(r, 12, k, d)
	m := &Model{Background: unitVec(r, d), Temperature: 0.05, Lambda: 2.0 / 3}
	rows := make([][]float32, ref)
	for i := range rows {
		rows[i] = vocab.Classes[i].Embedding
	}
	m.SetReference(rows)
	return m, regions, vocab
}

// A class's stable probability on a region is the same whatever other
// classes the vocabulary holds: reference classes and others, every head.
func TestStableScoresDoNotDependOnTheOtherNames(t *testing.T) {
	m, regions, vocab := stableScene(t, 12, 8)
	// class 2 is a reference entry, class 10 is not
	for _, probe := range []int{2, 10} {
		for _, head := range []detector.Head{detector.HeadEnsemble, detector.HeadText, detector.HeadImage} {
			var first []float32
			for _, others := range [][]int{{}, {0}, {0, 1, 3, 4, 5, 6, 7}, {9, 11}, {0, 1, 3, 4, 5, 6, 7, 8, 9, 11}} {
				v := &detector.Vocabulary{}
				for _, o := range others {
					v.Classes = append(v.Classes, vocab.Classes[o])
				}
				v.Classes = append(v.Classes, vocab.Classes[probe]) // last
				p, err := Prepare(v)
				if err != nil {
					t.Fatal(err)
				}
				probs, err := m.StableProbabilities(regions, p, head)
				if err != nil {
					t.Fatal(err)
				}
				col := make([]float32, len(regions.Boxes))
				for i := range col {
					col[i] = probs[i*p.k+p.k-1]
				}
				if first == nil {
					first = col
					continue
				}
				for i := range col {
					if math.Abs(float64(col[i]-first[i])) > 1e-5 { // float32 products, summed in another order
						t.Fatalf("class %d, %s head, with %v: region %d %v, alone %v", probe, head, others, i, col[i], first[i])
					}
				}
				// softmax scores do move with the other names
				if head == detector.HeadText && len(others) == 2 {
					soft, err := m.Probabilities(regions, p, head)
					if err != nil {
						t.Fatal(err)
					}
					if soft[p.k-1] == probs[p.k-1] {
						t.Fatalf("softmax equals stable with %v", others)
					}
				}
			}
		}
	}
}

// With the whole reference vocabulary as the request's, stable scores are
// the softmax ones; a class outside the reference joins its normalisation.
func TestStableScoresAreTheReferenceSoftmax(t *testing.T) {
	m, regions, vocab := stableScene(t, 9, 8)
	full := &detector.Vocabulary{Classes: vocab.Classes[:8]}
	p, _ := Prepare(full)
	for _, head := range []detector.Head{detector.HeadEnsemble, detector.HeadText, detector.HeadImage} {
		soft, err1 := m.Probabilities(regions, p, head)
		stable, err2 := m.StableProbabilities(regions, p, head)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		for i := range soft {
			if !closeProb(float64(stable[i]), float64(soft[i])) {
				t.Fatalf("%s head, entry %d: stable %v, softmax %v", head, i, stable[i], soft[i])
			}
		}
	}
	// class 8 alone is scored as the softmax over the reference plus itself
	alone := &detector.Vocabulary{Classes: vocab.Classes[8:9]}
	withIt := &detector.Vocabulary{Classes: vocab.Classes[:9]}
	pa, _ := Prepare(alone)
	pw, _ := Prepare(withIt)
	a, err1 := m.StableProbabilities(regions, pa, detector.HeadText)
	w, err2 := m.Probabilities(regions, pw, detector.HeadText)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	for i := range regions.Boxes {
		if !closeProb(float64(a[i]), float64(w[i*9+8])) {
			t.Fatalf("region %d: stable %v, softmax over reference and itself %v", i, a[i], w[i*9+8])
		}
	}
}

func TestStableScoresDefaultAndErrors(t *testing.T) {
	m, regions, vocab := stableScene(t, 4, 4)
	if m.DefaultScores() != detector.ScoresStable {
		t.Fatalf("default with a reference: %q", m.DefaultScores())
	}
	stable, err := m.Score(regions, vocab, detector.Options{ScoreThreshold: 0.01, Scores: detector.ScoresStable})
	if err != nil {
		t.Fatal(err)
	}
	def, err := m.Score(regions, vocab, detector.Options{ScoreThreshold: 0.01})
	if err != nil || len(def) != len(stable) || (len(def) > 0 && (def[0].Score != stable[0].Score || def[0].Label != stable[0].Label)) {
		t.Fatalf("default scores: %v %v, stable %v", err, def, stable)
	}
	if _, err := m.Score(regions, vocab, detector.Options{Scores: "calibrated"}); err == nil {
		t.Fatal("unknown scores accepted")
	}
	m.SetReference(nil)
	if m.DefaultScores() != detector.ScoresSoftmax {
		t.Fatalf("default without a reference: %q", m.DefaultScores())
	}
	if _, err := m.Score(regions, vocab, detector.Options{Scores: detector.ScoresStable}); !errors.Is(err, detector.ErrScoresUnsupported) {
		t.Fatalf("stable without a reference: %v", err)
	}
	if _, err := m.Score(regions, vocab, detector.Options{}); err != nil {
		t.Fatalf("softmax by default without a reference: %v", err)
	}
}
