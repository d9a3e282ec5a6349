package scoring

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/vild/vild/detector"
)

// golden is testdata/scoring_golden.json, written by testdata/gen_scoring.py
// (an independent NumPy implementation of docs/bundle.md's scoring).
type golden struct {
	Temperature float32 `json:"temperature"`
	Lambda      float32 `json:"lambda"`
	Classes     []struct {
		Label, Text    string
		Base, Negative bool
		Threshold      float32
		Embedding      []float32
	} `json:"classes"`
	Background      []float32 `json:"background"`
	Boxes           []float32 `json:"boxes"`
	TextEmbeddings  []float32 `json:"text_embeddings"`
	ImageEmbeddings []float32 `json:"image_embeddings"`
	Cases           []struct {
		Name           string    `json:"name"`
		Head           string    `json:"head"`
		ScoreThreshold float32   `json:"score_threshold"`
		NMSIoU         float32   `json:"nms_iou"`
		MaxDetections  int       `json:"max_detections"`
		RunnersUp      int       `json:"runners_up"`
		LabelsPerBox   int       `json:"labels_per_box"`
		Probabilities  []float64 `json:"probabilities"`
		Detections     []struct {
			Label     string               `json:"label"`
			Score     float64              `json:"score"`
			Region    int                  `json:"region"`
			RunnersUp []detector.Candidate `json:"runners_up"`
		} `json:"detections"`
	} `json:"cases"`
}

func loadGolden(t testing.TB) (*golden, *Model, *detector.Regions, *detector.Vocabulary) {
	t.Helper()
	data, err := os.ReadFile("testdata/scoring_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	m := &Model{Background: g.Background, Temperature: g.Temperature, Lambda: g.Lambda}
	d := len(g.Background)
	n := len(g.Boxes) / 4
	r := &detector.Regions{}
	for i := range n {
		r.Boxes = append(r.Boxes, [4]float32(g.Boxes[4*i:]))
		r.TextEmbeddings = append(r.TextEmbeddings, g.TextEmbeddings[i*d:(i+1)*d])
		r.ImageEmbeddings = append(r.ImageEmbeddings, g.ImageEmbeddings[i*d:(i+1)*d])
	}
	v := &detector.Vocabulary{}
	for _, c := range g.Classes {
		v.Classes = append(v.Classes, detector.Class{Label: c.Label, Text: c.Text, Embedding: c.Embedding,
			Base: c.Base, Negative: c.Negative, Threshold: c.Threshold})
	}
	return &g, m, r, v
}

// Probabilities: float32 dot products against the reference's float64 ones;
// with τ = 0.01 a 1e-7 similarity error is 1e-5 in the logit, so the stated
// tolerance is a relative 1e-4 (plus 1e-9 absolute for vanishing values).
func closeProb(got, want float64) bool {
	return math.Abs(got-want) <= 1e-4*math.Abs(want)+1e-9
}

func TestScoreMatchesReference(t *testing.T) {
	g, m, r, v := loadGolden(t)
	p, err := Prepare(v)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range g.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			probs, err := m.Probabilities(r, p, detector.Head(tc.Head))
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range tc.Probabilities {
				if !closeProb(float64(probs[i]), want) {
					t.Fatalf("probability %d (region %d class %d) = %v, reference %v", i, i/p.k, i%p.k, probs[i], want)
				}
			}
			opts := detector.Options{Head: detector.Head(tc.Head), ScoreThreshold: tc.ScoreThreshold,
				NMSIoU: tc.NMSIoU, MaxDetections: tc.MaxDetections, RunnersUp: tc.RunnersUp,
				LabelsPerBox: tc.LabelsPerBox}
			dets, err := m.Score(r, v, opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(dets) != len(tc.Detections) {
				t.Fatalf("%d detections, reference %d", len(dets), len(tc.Detections))
			}
			for i, want := range tc.Detections {
				got := dets[i]
				if got.Label != want.Label || !closeProb(float64(got.Score), want.Score) || got.Box != r.Boxes[want.Region] {
					t.Fatalf("detection %d = %s %v %v, reference %s %v region %d %v",
						i, got.Label, got.Score, got.Box, want.Label, want.Score, want.Region, r.Boxes[want.Region])
				}
				if len(got.RunnersUp) != len(want.RunnersUp) {
					t.Fatalf("detection %d: %d runners-up, reference %d", i, len(got.RunnersUp), len(want.RunnersUp))
				}
				for j, ru := range want.RunnersUp {
					if got.RunnersUp[j].Label != ru.Label || !closeProb(float64(got.RunnersUp[j].Score), float64(ru.Score)) {
						t.Fatalf("detection %d runner-up %d = %+v, reference %+v", i, j, got.RunnersUp[j], ru)
					}
				}
			}
		})
	}
}

func TestProbabilitiesProperties(t *testing.T) {
	_, m, r, v := loadGolden(t)
	p, err := Prepare(v)
	if err != nil {
		t.Fatal(err)
	}
	image, _ := m.Probabilities(r, p, detector.HeadImage)
	text, _ := m.Probabilities(r, p, detector.HeadText)
	ens, _ := m.Probabilities(r, p, detector.HeadEnsemble)
	for i := range r.Boxes {
		var si, st float64
		for k := range p.k {
			si += float64(image[i*p.k+k])
			st += float64(text[i*p.k+k])
			// The ensemble is a weighted geometric mean: between the two heads.
			lo := min(image[i*p.k+k], text[i*p.k+k])
			hi := max(image[i*p.k+k], text[i*p.k+k])
			if e := ens[i*p.k+k]; e < lo*(1-1e-5) || e > hi*(1+1e-5) {
				t.Fatalf("region %d class %d: ensemble %v outside [%v, %v]", i, k, e, lo, hi)
			}
		}
		if math.Abs(si-1) > 1e-5 {
			t.Fatalf("region %d: image-head probabilities sum to %v, want 1", i, si)
		}
		if st > 1+1e-5 {
			t.Fatalf("region %d: text-head probabilities sum to %v > 1 (background excluded)", i, st)
		}
	}
}

func unitVec(r *rand.Rand, d int) []float32 {
	v := make([]float32, d)
	var n float64
	for i := range v {
		v[i] = float32(r.NormFloat64())
		n += float64(v[i] * v[i])
	}
	for i := range v {
		v[i] /= float32(math.Sqrt(n))
	}
	return v
}

func TestNegativesAndSynonyms(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	const d = 16
	dog, cat, lookalike := unitVec(r, d), unitVec(r, d), unitVec(r, d)
	m := &Model{Background: unitVec(r, d), Temperature: 0.01, Lambda: 2.0 / 3}
	regions := &detector.Regions{
		Boxes:           [][4]float32{{0, 0, 10, 10}, {100, 100, 120, 120}},
		TextEmbeddings:  [][]float32{dog, lookalike},
		ImageEmbeddings: [][]float32{dog, lookalike},
	}
	vocab := &detector.Vocabulary{Classes: []detector.Class{
		{Label: "dog", Text: "dog", Embedding: dog, Base: true},
		{Label: "dog", Text: "puppy", Embedding: dog, Base: true},
		{Label: "cat", Text: "cat", Embedding: cat},
		{Label: "statue", Text: "statue", Embedding: lookalike, Negative: true},
	}}
	dets, err := m.Score(regions, vocab, detector.Options{ScoreThreshold: 0.1, NMSIoU: 0.5, RunnersUp: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(dets) != 1 || dets[0].Label != "dog" {
		t.Fatalf("detections %+v, want one dog (the look-alike absorbed by the negative)", dets)
	}
	// Two identical synonyms split the mass; their label sums it back.
	if dets[0].Score < 0.9 {
		t.Fatalf("dog score %v: synonyms not summed", dets[0].Score)
	}
	for _, ru := range dets[0].RunnersUp {
		if ru.Label == "statue" || ru.Label == "dog" {
			t.Fatalf("runner-up %q reported", ru.Label)
		}
	}
	// A per-class threshold above any score drops the detection, and one
	// below the options' threshold lets a weaker one through.
	vocab.Classes[0].Threshold = 2
	if dets, _ := m.Score(regions, vocab, detector.Options{ScoreThreshold: 0.1, NMSIoU: 0.5}); len(dets) != 0 {
		t.Fatalf("per-class threshold 2 ignored: %+v", dets)
	}
	vocab.Classes[0].Threshold = 0.01
	if dets, _ := m.Score(regions, vocab, detector.Options{ScoreThreshold: 1.5, NMSIoU: 0.5}); len(dets) != 1 {
		t.Fatalf("per-class threshold 0.01 not used over the options' 1.5: %+v", dets)
	}
}

func TestScoreErrors(t *testing.T) {
	_, m, r, v := loadGolden(t)
	short := *v
	short.Classes = append([]detector.Class(nil), v.Classes...)
	short.Classes[3].Embedding = short.Classes[3].Embedding[:5]
	badBG := *m
	badBG.Background = m.Background[:4]
	zeroTemp := *m
	zeroTemp.Temperature = 0
	missing := *r
	missing.ImageEmbeddings = r.ImageEmbeddings[:3]
	for _, tc := range []struct {
		name string
		m    *Model
		r    *detector.Regions
		v    *detector.Vocabulary
		head detector.Head
		want error
	}{
		{"empty vocabulary", m, r, &detector.Vocabulary{}, "", detector.ErrEmptyVocabulary},
		{"class dimension", m, r, &short, "", detector.ErrEmbeddingDim},
		{"background dimension", &badBG, r, v, detector.HeadText, detector.ErrEmbeddingDim},
		{"missing image embeddings", m, &missing, v, detector.HeadImage, detector.ErrEmbeddingDim},
		{"unknown head", m, r, v, "mixture", nil},
		{"zero temperature", &zeroTemp, r, v, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.m.Score(tc.r, tc.v, detector.Options{Head: tc.head})
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// The text-only head does not need image embeddings.
	if _, err := m.Score(&missing, v, detector.Options{Head: detector.HeadText}); err != nil {
		t.Fatalf("text head with partial image embeddings: %v", err)
	}
}

// BenchmarkScore scores 300 regions against 1,000 classes of D = 256 with the
// ensemble head (two similarity matrices, softmaxes, NMS), serially and with
// every core; then serially with 20 labels per region, at threshold 0 the
// worst case: 6,000 detections into the label-wise NMS.
func BenchmarkScore(b *testing.B) {
	r := rand.New(rand.NewPCG(2, 2))
	const n, k, d = 300, 1000, 256
	regions := &detector.Regions{}
	for range n {
		x, y := r.Float32()*300, r.Float32()*300
		regions.Boxes = append(regions.Boxes, [4]float32{x, y, x + 40, y + 40})
		regions.TextEmbeddings = append(regions.TextEmbeddings, unitVec(r, d))
		regions.ImageEmbeddings = append(regions.ImageEmbeddings, unitVec(r, d))
	}
	vocab := &detector.Vocabulary{}
	for c := range k {
		vocab.Classes = append(vocab.Classes, detector.Class{Label: fmt.Sprint("class", c), Embedding: unitVec(r, d), Base: c%2 == 0})
	}
	p, err := Prepare(vocab)
	if err != nil {
		b.Fatal(err)
	}
	opts := detector.Options{ScoreThreshold: 0, NMSIoU: 0.5, MaxDetections: 100, RunnersUp: 3}
	for _, c := range []struct {
		name                  string
		workers, labelsPerBox int
	}{{"workers=1", 1, 1}, {"workers=0", 0, 1}, {"workers=1/labels-per-box=20", 1, 20}} {
		b.Run(c.name, func(b *testing.B) {
			m := &Model{Background: unitVec(r, d), Temperature: 0.01, Lambda: 2.0 / 3, Workers: c.workers}
			o := opts
			o.LabelsPerBox = c.labelsPerBox
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.ScorePrepared(regions, p, o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
