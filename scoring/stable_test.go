package scoring

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
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
	forEachKernel(t, m, func(t *testing.T, m *Model) { testStableInvariance(t, m, regions, vocab) })
}

func testStableInvariance(t *testing.T, m *Model, regions *detector.Regions, vocab *detector.Vocabulary) {
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
	// a class outside the reference is scored as the softmax over the
	// reference, less the rows it replaces, plus itself
	for k := 8; k < 9; k++ {
		checkOutsider(t, m, regions, vocab.Classes[:8], vocab.Classes[k])
	}
}

// checkOutsider checks class c's stable text probability against the
// softmax over the reference classes it does not replace and itself.
func checkOutsider(t *testing.T, m *Model, regions *detector.Regions, reference []detector.Class, c detector.Class) {
	t.Helper()
	pa, _ := Prepare(&detector.Vocabulary{Classes: []detector.Class{c}})
	replaced := m.classify(pa).replaces[0]
	with := &detector.Vocabulary{}
	for j, r := range reference {
		if !slices.Contains(replaced, j) {
			with.Classes = append(with.Classes, r)
		}
	}
	with.Classes = append(with.Classes, c)
	pw, _ := Prepare(with)
	a, err1 := m.StableProbabilities(regions, pa, detector.HeadText)
	w, err2 := m.Probabilities(regions, pw, detector.HeadText)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	last := len(with.Classes) - 1
	for i := range regions.Boxes {
		if !closeProb(float64(a[i]), float64(w[i*len(with.Classes)+last])) {
			t.Fatalf("region %d (replacing %v): stable %v, softmax over the rest of the reference and itself %v", i, replaced, a[i], w[i*len(with.Classes)+last])
		}
	}
}

// A new name for a reference entry (an embedding nearer to it than any two
// reference rows are to each other) takes its place: its score is about the
// entry's, not half of it; a name near no entry replaces none.
func TestStableScoresNewNameReplacesItsEntry(t *testing.T) {
	m, regions, vocab := stableScene(t, 9, 8)
	r := rand.New(rand.NewPCG(7, 8))
	near := make([]float32, 16)
	var norm float64
	for i, v := range vocab.Classes[2].Embedding {
		near[i] = v + 1e-4*float32(r.NormFloat64())
		norm += float64(near[i] * near[i])
	}
	for i := range near {
		near[i] /= float32(math.Sqrt(norm))
	}
	newName := detector.Class{Label: "new name for class2", Embedding: near, Base: vocab.Classes[2].Base}
	forEachKernel(t, m, func(t *testing.T, m *Model) {
		p, _ := Prepare(&detector.Vocabulary{Classes: []detector.Class{newName, vocab.Classes[2]}})
		if got := m.classify(p); got.ref[0] != -1 || !slices.Equal(got.replaces[0], []int{2}) || got.ref[1] != 2 {
			t.Fatalf("classes %+v, want the new name replacing row 2", got)
		}
		probs, err := m.StableProbabilities(regions, p, detector.HeadEnsemble)
		if err != nil {
			t.Fatal(err)
		}
		for i := range regions.Boxes {
			got, entry := probs[2*i], probs[2*i+1]
			if entry > 0.05 && math.Abs(float64(got-entry)) > 0.02*float64(entry) { // sharing would give at most entry/(1+entry)
				t.Fatalf("region %d: the new name %v, its entry %v", i, got, entry)
			}
		}
		checkOutsider(t, m, regions, vocab.Classes[:8], newName)
		checkOutsider(t, m, regions, vocab.Classes[:8], vocab.Classes[8])
	})
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
	m.SetReference([][]float32{{1, 0, 0}})
	if _, err := m.Score(regions, vocab, detector.Options{}); !errors.Is(err, detector.ErrEmbeddingDim) {
		t.Fatalf("a reference of 3 dimensions for a vocabulary of 16: %v", err)
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

// BenchmarkStableScore is BenchmarkScore's scene (300 regions, D = 256) at
// the bundled model's sizes: 703 classes, and a reference vocabulary of 703
// (the vocabulary's own rows, as a request of the model's whole list) or
// 10 classes against that reference; softmax on both kernels beside it.
func BenchmarkStableScore(b *testing.B) {
	r := rand.New(rand.NewPCG(2, 2))
	regions, vocab := randomScene(r, 300, 703, 256)
	rows := make([][]float32, len(vocab.Classes))
	for i, c := range vocab.Classes {
		rows[i] = c.Embedding
	}
	small, _ := Prepare(&detector.Vocabulary{Classes: vocab.Classes[:10]})
	full, _ := Prepare(vocab)
	bg := unitVec(r, 256)
	opts := detector.Options{ScoreThreshold: 0.05, NMSIoU: 0.5, MaxDetections: 100}
	for _, c := range []struct {
		name   string
		p      *Prepared
		scores detector.Scores
		graph  bool
	}{{"stable/703", full, detector.ScoresStable, false}, {"stable/10", small, detector.ScoresStable, false},
		{"softmax/703", full, detector.ScoresSoftmax, false}, {"softmax/703/kernel=ort", full, detector.ScoresSoftmax, true},
		{"softmax/10/kernel=ort", small, detector.ScoresSoftmax, true},
		{"stable/703/kernel=ort", full, detector.ScoresStable, true}, {"stable/10/kernel=ort", small, detector.ScoresStable, true}} {
		b.Run(c.name, func(b *testing.B) {
			m := &Model{Background: bg, Temperature: 0.01, Lambda: 2.0 / 3, Workers: 1}
			m.SetReference(rows)
			if c.graph {
				m.Graph = openGraph(b, 1)
			}
			o := opts
			o.Scores = c.scores
			for b.Loop() {
				if _, err := m.ScorePrepared(regions, c.p, o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The two kernels give the same stable probabilities: the reference's
// softmaxes on ONNX Runtime against the pure-Go loops, at the shipped
// model's size, with reference classes, others, and a mix.
func TestStableGraphMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	regions, vocab := randomScene(r, 300, 720, 256)
	rows := make([][]float32, 703)
	for i := range rows {
		rows[i] = vocab.Classes[i].Embedding
	}
	bg := unitVec(r, 256)
	goModel := &Model{Background: bg, Temperature: 0.01, Lambda: 2.0 / 3}
	goModel.SetReference(rows)
	ortModel := &Model{Background: bg, Temperature: 0.01, Lambda: 2.0 / 3, Graph: openGraph(t, 1)}
	ortModel.SetReference(rows)
	for _, classes := range [][]detector.Class{vocab.Classes[:703], vocab.Classes[700:], vocab.Classes[:10]} {
		p, err := Prepare(&detector.Vocabulary{Classes: classes})
		if err != nil {
			t.Fatal(err)
		}
		for _, head := range []detector.Head{detector.HeadEnsemble, detector.HeadText, detector.HeadImage} {
			want, err1 := goModel.StableProbabilities(regions, p, head)
			got, err2 := ortModel.StableProbabilities(regions, p, head)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			for i := range want {
				if !closeProb(float64(got[i]), float64(want[i])) {
					t.Fatalf("%d classes, %s head, entry %d: graph %v, Go %v", len(classes), head, i, got[i], want[i])
				}
			}
		}
	}
}

// An image temperature changes the image head's softmax alone: with
// ImageTemperature τ_i the image head is the image head of a model whose one
// temperature is τ_i, the text head is unchanged, and the ensemble combines
// those two as docs/bundle.md says; for softmax and stable scores, on both
// kernels.
func TestImageTemperature(t *testing.T) {
	base, regions, vocab := stableScene(t, 9, 8)
	base.Temperature = 0.02
	withImage := *base
	withImage.ImageTemperature = 0.06
	p, err := Prepare(vocab)
	if err != nil {
		t.Fatal(err)
	}
	forEachKernel(t, &withImage, func(t *testing.T, m *Model) {
		// the models compared with m, on m's kernel
		one, imageOnly := *base, *base
		one.Graph, imageOnly.Graph = m.Graph, m.Graph
		imageOnly.Temperature = 0.06
		for _, stable := range []bool{false, true} {
			probs := func(m *Model, head detector.Head) []float32 {
				t.Helper()
				f := m.Probabilities
				if stable {
					f = m.StableProbabilities
				}
				out, err := f(regions, p, head)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			text, img, ens := probs(m, detector.HeadText), probs(m, detector.HeadImage), probs(m, detector.HeadEnsemble)
			wantText, wantImg := probs(&one, detector.HeadText), probs(&imageOnly, detector.HeadImage)
			oneImg := probs(&one, detector.HeadImage)
			lam := float64(base.Lambda)
			changed := 0
			for i := range text {
				w := lam
				if !vocab.Classes[i%len(vocab.Classes)].Base {
					w = 1 - lam
				}
				wantEns := math.Pow(float64(wantText[i]), w) * math.Pow(float64(wantImg[i]), 1-w)
				if !closeProb(float64(text[i]), float64(wantText[i])) || !closeProb(float64(img[i]), float64(wantImg[i])) ||
					!closeProb(float64(ens[i]), wantEns) {
					t.Fatalf("stable %v, entry %d: text %v image %v ensemble %v, want %v %v %v", stable, i,
						text[i], img[i], ens[i], wantText[i], wantImg[i], wantEns)
				}
				if !closeProb(float64(img[i]), float64(oneImg[i])) {
					changed++
				}
			}
			if changed < len(img)/2 {
				t.Fatalf("stable %v: the image temperature changed %d of %d image-head probabilities", stable, changed, len(img))
			}
		}
	})
}

// The teacher's crops fold into the ensemble as docs/bundle.md says: on a
// region with a crop embedding, p_ens^(1−μ)·p_crop^μ with p_crop the image
// head's rule on the crop at the crops' temperature, normalised as stable
// scores are in either mode (μ per base and novel class); regions without
// one, the text head and the image head are unchanged; stable crop scores
// do not depend on the other names. Softmax and stable scores, on both
// kernels; a model without a reference weighs the teacher by softmax.
func TestCrops(t *testing.T) {
	base, regions, vocab := stableScene(t, 9, 8)
	r := rand.New(rand.NewPCG(9, 9))
	withCrops := *regions
	for range 5 { // the first 5 of 12 regions
		withCrops.CropEmbeddings = append(withCrops.CropEmbeddings, unitVec(r, len(base.Background)))
	}
	m0 := *base
	m0.ImageTemperature = 0.04
	mc := m0
	mc.Crops = &Crops{Temperature: 0.08, LambdaBase: 0.25, LambdaNovel: 0.6}
	p, err := Prepare(vocab)
	if err != nil {
		t.Fatal(err)
	}
	forEachKernel(t, &mc, func(t *testing.T, m *Model) {
		without, teacher := m0, m0
		without.Graph, teacher.Graph = m.Graph, m.Graph
		teacher.ImageTemperature = mc.Crops.Temperature
		crops := &detector.Regions{Boxes: withCrops.Boxes[:5], ImageEmbeddings: withCrops.CropEmbeddings}
		for _, stable := range []bool{false, true} {
			probs := func(m *Model, r *detector.Regions, head detector.Head) []float32 {
				t.Helper()
				f := m.Probabilities
				if stable {
					f = m.StableProbabilities
				}
				out, err := f(r, p, head)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			ens, plain := probs(m, &withCrops, detector.HeadEnsemble), probs(&without, &withCrops, detector.HeadEnsemble)
			pc, err := teacher.StableProbabilities(crops, p, detector.HeadImage)
			if err != nil {
				t.Fatal(err)
			}
			for _, head := range []detector.Head{detector.HeadText, detector.HeadImage} {
				if !slices.Equal(probs(m, &withCrops, head), probs(&without, &withCrops, head)) {
					t.Fatalf("stable %v: crops changed the %s head", stable, head)
				}
			}
			if !slices.Equal(probs(m, regions, detector.HeadEnsemble), probs(&without, regions, detector.HeadEnsemble)) {
				t.Fatalf("stable %v: regions without crop embeddings scored differently", stable)
			}
			k := len(vocab.Classes)
			changed := 0
			for i := range ens {
				want := float64(plain[i])
				if region := i / k; region < 5 {
					mu := 0.6
					if vocab.Classes[i%k].Base {
						mu = 0.25
					}
					want = math.Pow(want, 1-mu) * math.Pow(float64(pc[i]), mu)
				}
				if !closeProb(float64(ens[i]), want) {
					t.Fatalf("stable %v, entry %d: %v, want %v", stable, i, ens[i], want)
				}
				if !closeProb(float64(ens[i]), float64(plain[i])) {
					changed++
				}
			}
			if changed < 5*k/2 {
				t.Fatalf("stable %v: the crops changed %d of %d probabilities of the 5 regions", stable, changed, 5*k)
			}
		}
		// a stable crop score does not depend on the other names
		few := &detector.Vocabulary{Classes: []detector.Class{vocab.Classes[2], vocab.Classes[7]}}
		pf, err := Prepare(few)
		if err != nil {
			t.Fatal(err)
		}
		all, err := m.StableProbabilities(&withCrops, p, detector.HeadEnsemble)
		if err != nil {
			t.Fatal(err)
		}
		some, err := m.StableProbabilities(&withCrops, pf, detector.HeadEnsemble)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			if !closeProb(float64(some[2*i]), float64(all[i*len(vocab.Classes)+2])) {
				t.Fatalf("region %d: stable ensemble with crops %v among 2 names, %v among %d", i, some[2*i], all[i*len(vocab.Classes)+2], len(vocab.Classes))
			}
		}
	})
	// without a reference the teacher is a softmax over the request's names
	noRef, noRefPlain, noRefTeacher := mc, m0, m0
	for _, m := range []*Model{&noRef, &noRefPlain, &noRefTeacher} {
		m.SetReference(nil)
	}
	noRefTeacher.ImageTemperature = mc.Crops.Temperature
	plain, err := noRefPlain.Probabilities(regions, p, detector.HeadEnsemble)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := noRefTeacher.Probabilities(&detector.Regions{Boxes: withCrops.Boxes[:5], ImageEmbeddings: withCrops.CropEmbeddings}, p, detector.HeadImage)
	if err != nil {
		t.Fatal(err)
	}
	got, err := noRef.Probabilities(&withCrops, p, detector.HeadEnsemble)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 * len(vocab.Classes) {
		mu := 0.6
		if vocab.Classes[i%len(vocab.Classes)].Base {
			mu = 0.25
		}
		if want := math.Pow(float64(plain[i]), 1-mu) * math.Pow(float64(pc[i]), mu); !closeProb(float64(got[i]), want) {
			t.Fatalf("no reference, entry %d: %v, want %v", i, got[i], want)
		}
	}
	// more crop embeddings than regions, or a bad setting, is an error
	bad := withCrops
	bad.CropEmbeddings = append(slices.Clone(withCrops.CropEmbeddings), make([][]float32, 8)...)
	if _, err := mc.Probabilities(&bad, p, detector.HeadEnsemble); err == nil {
		t.Fatal("13 crop embeddings of 12 regions scored")
	}
	worse := mc
	worse.Crops = &Crops{Temperature: 0, LambdaNovel: 0.5}
	if _, err := worse.Probabilities(&withCrops, p, detector.HeadEnsemble); err == nil {
		t.Fatal("a crops temperature of 0 scored")
	}
}
