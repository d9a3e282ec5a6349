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
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/ort"
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

// forEachKernel runs f with m on the pure-Go path and with m on the ONNX
// Runtime graph (skipped when the library is absent or the build has no cgo).
func forEachKernel(t *testing.T, m *Model, f func(t *testing.T, m *Model)) {
	t.Run("kernel=go", func(t *testing.T) { f(t, m) })
	t.Run("kernel=ort", func(t *testing.T) {
		withGraph := *m
		withGraph.Graph = openGraph(t, 1)
		f(t, &withGraph)
	})
}

func openGraph(t testing.TB, threads int) *Graph {
	t.Helper()
	g, err := OpenGraph(testbundle.Runtime(t, ort.Config{IntraOpThreads: threads}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Error(err)
		}
	})
	return g
}

// tiedMatch checks that the n results are the n reference ones in order, up
// to ties: result i must match (same(i, j)) a reference j not matched yet
// whose score is within closeProb of reference i's. It returns the first i
// that has no such j, or -1.
func tiedMatch(n int, score func(int) float64, same func(i, j int) bool) int {
	used := make([]bool, n)
	for i := range n {
		found := false
		for j := range n {
			if !used[j] && closeProb(score(j), score(i)) && same(i, j) {
				used[j], found = true, true
				break
			}
		}
		if !found {
			return i
		}
	}
	return -1
}

func TestScoreMatchesReference(t *testing.T) {
	_, m, _, _ := loadGolden(t)
	forEachKernel(t, m, testScoreMatchesReference)
}

func testScoreMatchesReference(t *testing.T, m *Model) {
	g, _, r, v := loadGolden(t)
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
			// Detections whose reference scores tie within the tolerance may
			// come in either order (float32 rounding decides it).
			j := tiedMatch(len(dets), func(i int) float64 { return tc.Detections[i].Score }, func(i, j int) bool {
				got, want := dets[i], tc.Detections[j]
				return got.Label == want.Label && closeProb(float64(got.Score), want.Score) && got.Box == r.Boxes[want.Region]
			})
			if j >= 0 {
				want := tc.Detections[j]
				t.Fatalf("detection %d = %s %v %v, reference %s %v region %d %v",
					j, dets[j].Label, dets[j].Score, dets[j].Box, want.Label, want.Score, want.Region, r.Boxes[want.Region])
			}
			for i := range dets {
				// The runners-up of the detection at i, against those of the
				// reference detection it matched (the same region and label).
				var want []detector.Candidate
				for _, w := range tc.Detections {
					if w.Label == dets[i].Label && r.Boxes[w.Region] == dets[i].Box {
						want = w.RunnersUp
					}
				}
				got := dets[i].RunnersUp
				if len(got) != len(want) {
					t.Fatalf("detection %d: %d runners-up, reference %d", i, len(got), len(want))
				}
				if j := tiedMatch(len(got), func(k int) float64 { return float64(want[k].Score) }, func(k, l int) bool {
					return got[k].Label == want[l].Label && closeProb(float64(got[k].Score), float64(want[l].Score))
				}); j >= 0 {
					t.Fatalf("detection %d runner-up %d = %+v, reference %+v", i, j, got[j], want[j])
				}
			}
		})
	}
}

func TestProbabilitiesProperties(t *testing.T) {
	_, m, _, _ := loadGolden(t)
	forEachKernel(t, m, testProbabilitiesProperties)
}

func testProbabilitiesProperties(t *testing.T, m *Model) {
	_, _, r, v := loadGolden(t)
	p, err := Prepare(v)
	if err != nil {
		t.Fatal(err)
	}
	image, err1 := m.Probabilities(r, p, detector.HeadImage)
	text, err2 := m.Probabilities(r, p, detector.HeadText)
	ens, err3 := m.Probabilities(r, p, detector.HeadEnsemble)
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
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
	forEachKernel(t, &Model{Temperature: 0.01, Lambda: 2.0 / 3}, testNegativesAndSynonyms)
}

func testNegativesAndSynonyms(t *testing.T, m *Model) {
	r := rand.New(rand.NewPCG(1, 1))
	const d = 16
	dog, cat, lookalike := unitVec(r, d), unitVec(r, d), unitVec(r, d)
	m.Background = unitVec(r, d)
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
	_, m, _, _ := loadGolden(t)
	forEachKernel(t, m, testScoreErrors)
}

func testScoreErrors(t *testing.T, m *Model) {
	_, _, r, v := loadGolden(t)
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
// ensemble head (two similarity matrices, softmaxes, NMS): in Go serially and
// with every core, on the ONNX Runtime graph with one intra-op thread; then
// serially with 20 labels per region, at threshold 0 the worst case: 6,000
// detections into the label-wise NMS.
func BenchmarkScore(b *testing.B) {
	r := rand.New(rand.NewPCG(2, 2))
	regions, vocab := randomScene(r, 300, 1000, 256)
	p, err := Prepare(vocab)
	if err != nil {
		b.Fatal(err)
	}
	opts := detector.Options{ScoreThreshold: 0, NMSIoU: 0.5, MaxDetections: 100, RunnersUp: 3}
	for _, c := range []struct {
		name                  string
		workers, labelsPerBox int
		graph                 bool
	}{{"workers=1", 1, 1, false}, {"workers=0", 0, 1, false}, {"kernel=ort", 1, 1, true},
		{"workers=1/labels-per-box=20", 1, 20, false}} {
		b.Run(c.name, func(b *testing.B) {
			m := &Model{Background: unitVec(r, 256), Temperature: 0.01, Lambda: 2.0 / 3, Workers: c.workers}
			if c.graph {
				m.Graph = openGraph(b, 1)
			}
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

// randomScene is n regions with random unit embeddings of dimension d and k
// classes (every other one base), as the benchmarks use.
func randomScene(r *rand.Rand, n, k, d int) (*detector.Regions, *detector.Vocabulary) {
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
	return regions, vocab
}

// TestGraphMatchesGo compares the two kernels at the shipped model's size
// (300 regions, 703 classes, D = 256, τ = 0.01) on every head: each
// probability within closeProb, and the same detections up to ties.
func TestGraphMatchesGo(t *testing.T) {
	g := openGraph(t, 2)
	r := rand.New(rand.NewPCG(3, 3))
	regions, vocab := randomScene(r, 300, 703, 256)
	// Half the regions close to a class, so that probabilities spread from
	// saturated to tiny.
	for i := range 150 {
		c := vocab.Classes[r.IntN(703)].Embedding
		for j := range regions.TextEmbeddings[i] {
			regions.TextEmbeddings[i][j] = 0.8*c[j] + 0.2*regions.TextEmbeddings[i][j]
			regions.ImageEmbeddings[i][j] = 0.7*c[j] + 0.3*regions.ImageEmbeddings[i][j]
		}
	}
	goModel := &Model{Background: unitVec(r, 256), Temperature: 0.01, Lambda: 2.0 / 3, Workers: 1}
	ortModel := *goModel
	ortModel.Graph = g
	p, err := Prepare(vocab)
	if err != nil {
		t.Fatal(err)
	}
	for _, head := range []detector.Head{detector.HeadEnsemble, detector.HeadText, detector.HeadImage} {
		want, err1 := goModel.Probabilities(regions, p, head)
		got, err2 := ortModel.Probabilities(regions, p, head)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if !closeProb(float64(got[i]), float64(want[i])) {
				t.Fatalf("%s: probability %d = %v on the graph, %v in Go", head, i, got[i], want[i])
			}
		}
		opts := detector.Options{Head: head, ScoreThreshold: 0.05, NMSIoU: 0.5, MaxDetections: 300, RunnersUp: 3}
		a, err1 := goModel.ScorePrepared(regions, p, opts)
		b, err2 := ortModel.ScorePrepared(regions, p, opts)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if len(a) < 100 || len(a) != len(b) {
			t.Fatalf("%s: %d detections in Go, %d on the graph (want the same, at least 100)", head, len(a), len(b))
		}
		if i := tiedMatch(len(a), func(i int) float64 { return float64(a[i].Score) }, func(i, j int) bool {
			return b[i].Label == a[j].Label && b[i].Box == a[j].Box && closeProb(float64(b[i].Score), float64(a[j].Score))
		}); i >= 0 {
			t.Fatalf("%s: detection %d = %+v on the graph, %+v in Go", head, i, b[i], a[i])
		}
	}
}

// BenchmarkProbabilities compares the two kernels on the similarity
// matrices, softmaxes and ensemble alone (no labels, no NMS): 300 regions of
// D = 256 against 10, 703 and 1,203 random unit vectors, each on one thread
// (Workers 1; one intra-op thread).
func BenchmarkProbabilities(b *testing.B) {
	g := openGraph(b, 1)
	r := rand.New(rand.NewPCG(4, 4))
	for _, k := range []int{10, 703, 1203} {
		regions, vocab := randomScene(r, 300, k, 256)
		p, err := Prepare(vocab)
		if err != nil {
			b.Fatal(err)
		}
		goModel := &Model{Background: unitVec(r, 256), Temperature: 0.01, Lambda: 2.0 / 3, Workers: 1}
		ortModel := *goModel
		ortModel.Graph = g
		for _, c := range []struct {
			name string
			m    *Model
		}{{"go", goModel}, {"ort", &ortModel}} {
			b.Run(fmt.Sprintf("classes=%d/kernel=%s", k, c.name), func(b *testing.B) {
				for b.Loop() {
					if _, err := c.m.Probabilities(regions, p, detector.HeadEnsemble); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestConcurrentScore scores from 16 goroutines at once on one Model (its
// Graph and pooled buffers shared): every result equals the serial one.
func TestConcurrentScore(t *testing.T) {
	_, m, _, _ := loadGolden(t)
	forEachKernel(t, m, func(t *testing.T, m *Model) {
		g, _, r, v := loadGolden(t)
		opts := make([]detector.Options, len(g.Cases))
		want := make([][]detector.Detection, len(g.Cases))
		for i, tc := range g.Cases {
			opts[i] = detector.Options{Head: detector.Head(tc.Head), ScoreThreshold: tc.ScoreThreshold,
				NMSIoU: tc.NMSIoU, MaxDetections: tc.MaxDetections, RunnersUp: tc.RunnersUp, LabelsPerBox: tc.LabelsPerBox}
			var err error
			if want[i], err = m.Score(r, v, opts[i]); err != nil {
				t.Fatal(err)
			}
		}
		errs := make(chan error, 16)
		for w := range 16 {
			go func() {
				for j := range 4 * len(opts) {
					c := (w + j) % len(opts)
					got, err := m.Score(r, v, opts[c])
					if err == nil && fmt.Sprint(got) != fmt.Sprint(want[c]) {
						err = fmt.Errorf("goroutine %d, case %s: detections differ from the serial run", w, g.Cases[c].Name)
					}
					if err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range 16 {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	})
}
