// Package scoring classifies region embeddings against a vocabulary of text
// embeddings and post-processes the result into detections, following the
// "scoring" rules of docs/bundle.md (ViLD section 3):
//
//   - text head: softmax over [background, vocabulary] of cosine similarity /
//     temperature, the background entry dropped;
//   - image head: softmax over the vocabulary alone;
//   - ensemble with λ: base classes p_text^λ·p_image^(1−λ), other classes
//     p_text^(1−λ)·p_image^λ;
//   - when the model has Crops and the regions carry CropEmbeddings (the
//     teacher's embeddings of the first regions' crops), the ensemble's
//     probability p of a class on such a region becomes p^(1−μ)·p_crop^μ,
//     p_crop the image head's rule applied to the crop embedding at the
//     crops' own temperature, with stable scores' normaliser whenever the
//     model has a reference, in either mode (docs/decisions/0031);
//   - with stable scores (detector.ScoresStable, the default of a Model with
//     a Reference), each head's normalisation is not the request's
//     vocabulary but the model's reference vocabulary (its own category
//     list), plus the class itself when it is not one of them: a class's
//     probability on a region then does not depend on the other classes of
//     the request (docs/decisions/0027-stable-scores.md);
//   - classes sharing a label sum their probabilities;
//   - each region keeps its best label, or its Options.LabelsPerBox best
//     labels, each a detection of its own; when the best label belongs to a
//     negative class the region is dropped (negatives absorb look-alikes and
//     are never reported, not even as runners-up);
//   - a detection is kept when its score is at least its label's threshold
//     (the largest non-zero Threshold of the label's classes, else
//     Options.ScoreThreshold);
//   - NMS among detections of the same label, then the top MaxDetections.
//
// The similarity matrices, softmaxes and ensemble run on one of two kernels:
// a Graph (probabilities.onnx on ONNX Runtime, whose matrix products are
// SGEMMs), or pure-Go loops when Model.Graph is nil (builds without cgo, and
// models assembled without a runtime). docs/decisions/0024 has the
// measurements behind the choice.
package scoring

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/vild/vild/boxes"
	"github.com/vild/vild/detector"
)

// Model holds the scoring constants of a bundle.
type Model struct {
	Background  []float32 // learned background embedding [D], L2-normalised
	Temperature float32   // τ: similarities are divided by it
	// ImageTemperature is the image head's τ; 0 means Temperature.
	ImageTemperature float32
	Lambda           float32 // ensemble weight λ of the head a class is "native" to
	Workers          int     // goroutines over regions of the pure-Go path; ≤ 0 means GOMAXPROCS
	// Reference is the reference vocabulary of stable scores, the text
	// embeddings of the model's own categories, [R, D] row-major, as
	// SetReference sets it (set only that way); empty, the model offers
	// softmax scores only.
	Reference []float32
	refIndex  map[uint64]int // embeddingHash → reference row
	refPacked *Prepared      // Reference as a vocabulary of novel classes, for the Graph
	refBase   *Prepared      // the same as base classes
	refNear   float32        // the largest similarity of two reference rows
	// Crops, when set, makes the ensemble consult the teacher's embeddings
	// of the regions' crops (Regions.CropEmbeddings) where a region has one.
	Crops *Crops
	// Graph, when set, computes the probabilities on ONNX Runtime (OpenGraph);
	// nil means the pure-Go loops. Both give the same numbers within a relative
	// 1e-4 (docs/decisions/0024-scoring-on-onnx-runtime.md).
	Graph *Graph
}

// Crops are how the teacher's view of a region's crops joins the ensemble
// (bundle.Crops): p_crop is the image head's rule at Temperature; a class's
// ensemble probability p becomes p^(1−μ)·p_crop^μ, μ = LambdaBase for base
// classes, LambdaNovel for the others.
type Crops struct {
	Temperature             float32
	LambdaBase, LambdaNovel float32
}

// SetReference makes rows (the model's category embeddings, [R][D]) the
// reference vocabulary of stable scores; none leaves the model with softmax
// scores only.
func (m *Model) SetReference(rows [][]float32) {
	m.Reference, m.refIndex, m.refPacked, m.refBase = nil, nil, nil, nil
	if len(rows) == 0 {
		return
	}
	m.refIndex = make(map[uint64]int, len(rows))
	for i, r := range rows {
		m.Reference = append(m.Reference, r...)
		if _, dup := m.refIndex[embeddingHash(r)]; !dup {
			m.refIndex[embeddingHash(r)] = i
		}
	}
	m.refPacked = &Prepared{dim: len(rows[0]), k: len(rows), matrix: m.Reference, base: make([]bool, len(rows))}
	m.refBase = &Prepared{dim: m.refPacked.dim, k: m.refPacked.k, matrix: m.Reference, base: make([]bool, len(rows))}
	for i := range m.refBase.base {
		m.refBase.base[i] = true
	}
	m.refNear = float32(math.Inf(-1))
	sims := make([]float64, len(rows))
	for i, r := range rows {
		similarities(sims, r, m.Reference, len(r))
		for j, v := range sims {
			if j != i && float32(v) > m.refNear {
				m.refNear = float32(v)
			}
		}
	}
}

// stableClasses is how stable scores treat each class of a vocabulary.
type stableClasses struct {
	// ref is the reference row a class is (its embedding exactly), or -1.
	ref []int
	// replaces, for a class that is not a reference row, lists (ascending)
	// the rows at least as similar to it as the two most similar reference
	// rows are to each other: a new name for a category ("dogs" for
	// "dog") takes that category's place in its normaliser instead of
	// sharing the probability with it.
	replaces [][]int
}

// classify matches p's classes to the reference.
func (m *Model) classify(p *Prepared) *stableClasses {
	sc := &stableClasses{ref: make([]int, p.k), replaces: make([][]int, p.k)}
	var sims []float64
	for k := range p.k {
		e := p.matrix[k*p.dim : (k+1)*p.dim]
		if sc.ref[k] = m.referenceRow(e); sc.ref[k] >= 0 {
			continue
		}
		if sims == nil {
			sims = make([]float64, m.refPacked.k)
		}
		similarities(sims, e, m.Reference, p.dim)
		for j, v := range sims {
			if float32(v) >= m.refNear {
				sc.replaces[k] = append(sc.replaces[k], j)
			}
		}
	}
	return sc
}

// othersLogProb is the log-probability of a class that is not a reference
// row, of logit l (similarity / τ), given the region's log normaliser norm
// over the background and the reference and, when the class replaces rows,
// rest: the share of that normaliser left without them (1 when it replaces
// none).
func othersLogProb(l, norm, rest float64) float64 {
	if rest >= 1 {
		hi := max(norm, l)
		return l - (hi + math.Log(math.Exp(norm-hi)+math.Exp(l-hi)))
	}
	// l − log(rest·e^norm + e^l)
	a := math.Log(max(rest, 0)) + norm
	hi := max(a, l)
	return l - (hi + math.Log(math.Exp(a-hi)+math.Exp(l-hi)))
}

// restWithout sums prob(j) over the reference rows not in skip (ascending).
func restWithout(n int, skip []int, prob func(j int) float64) float64 {
	var sum float64
	for j := range n {
		if len(skip) > 0 && skip[0] == j {
			skip = skip[1:]
			continue
		}
		sum += prob(j)
	}
	return sum
}

// embeddingHash is FNV-1a over e's bits: a vocabulary class is a reference
// entry when its embedding is that entry's exactly (a name the bundle knows
// is embedded from its precomputed row); referenceRow checks the bits.
func embeddingHash(e []float32) uint64 {
	h := uint64(14695981039346656037)
	for _, v := range e {
		b := math.Float32bits(v)
		for range 4 {
			h = (h ^ uint64(b&0xff)) * 1099511628211
			b >>= 8
		}
	}
	return h
}

// referenceRow is the reference row whose embedding is e exactly, or -1.
func (m *Model) referenceRow(e []float32) int {
	j, ok := m.refIndex[embeddingHash(e)]
	if !ok || (j+1)*len(e) > len(m.Reference) || !slices.Equal(m.Reference[j*len(e):(j+1)*len(e)], e) {
		return -1
	}
	return j
}

// DefaultScores is what an empty Options.Scores means: stable scores when
// the model has a reference vocabulary, else softmax.
func (m *Model) DefaultScores() detector.Scores {
	if m.refPacked != nil {
		return detector.ScoresStable
	}
	return detector.ScoresSoftmax
}

// Prepared is a vocabulary packed for scoring: embeddings in one [K, D]
// matrix and classes grouped by label. Prepare it once per vocabulary.
type Prepared struct {
	dim       int
	k         int
	matrix    []float32 // [K, D]
	base      []bool    // per class
	labelOf   []int     // per class: index into labels
	labels    []string
	singleton bool      // every label has one class: label l is class l
	negative  []bool    // per label
	threshold []float32 // per label: explicit threshold, 0 when none
}

// Prepare packs v for scoring.
func Prepare(v *detector.Vocabulary) (*Prepared, error) {
	return prepare(v, nil)
}

// prepare is Prepare with the matrix in matrix's array when it is large
// enough.
func prepare(v *detector.Vocabulary, matrix []float32) (*Prepared, error) {
	if v == nil || len(v.Classes) == 0 {
		return nil, detector.ErrEmptyVocabulary
	}
	dim := len(v.Classes[0].Embedding)
	if cap(matrix) < dim*len(v.Classes) {
		matrix = make([]float32, 0, dim*len(v.Classes))
	}
	p := &Prepared{dim: dim, k: len(v.Classes), matrix: matrix[:0],
		base: make([]bool, len(v.Classes)), labelOf: make([]int, len(v.Classes))}
	index := make(map[string]int, len(v.Classes))
	for i, c := range v.Classes {
		if len(c.Embedding) != dim || dim == 0 {
			return nil, fmt.Errorf("scoring: class %q has %d dimensions, class 0 %d: %w",
				c.Text, len(c.Embedding), dim, detector.ErrEmbeddingDim)
		}
		p.matrix = append(p.matrix, c.Embedding...)
		p.base[i] = c.Base
		l, ok := index[c.Label]
		if !ok {
			l = len(p.labels)
			index[c.Label] = l
			p.labels = append(p.labels, c.Label)
			p.negative = append(p.negative, false)
			p.threshold = append(p.threshold, 0)
		}
		p.labelOf[i] = l
		p.negative[l] = p.negative[l] || c.Negative
		p.threshold[l] = max(p.threshold[l], c.Threshold)
	}
	p.singleton = len(p.labels) == p.k
	return p, nil
}

// Score classifies every region of r against v and returns the detections in
// decreasing score order. opts is used as given, except that an empty Head
// means HeadEnsemble and MaxDetections ≤ 0 means no cap.
func (m *Model) Score(r *detector.Regions, v *detector.Vocabulary, opts detector.Options) ([]detector.Detection, error) {
	buf, _ := matrixBuffers.Get().(*[]float32)
	if buf == nil {
		buf = new([]float32)
	}
	defer matrixBuffers.Put(buf)
	p, err := prepare(v, *buf)
	if err != nil {
		return nil, err
	}
	*buf = p.matrix
	return m.ScorePrepared(r, p, opts)
}

// matrixBuffers holds Score's packed vocabulary matrices between calls
// (*[]float32): the Prepared of a Score call does not outlive it.
var matrixBuffers sync.Pool

// region is one labelled region before NMS.
type region struct {
	index     int
	label     int
	score     float32
	runnersUp []detector.Candidate
}

// ScorePrepared is Score with a prepared vocabulary.
func (m *Model) ScorePrepared(r *detector.Regions, p *Prepared, opts detector.Options) ([]detector.Detection, error) {
	buf, _ := probabilityBuffers.Get().(*[]float32)
	if buf == nil {
		buf = new([]float32)
	}
	defer probabilityBuffers.Put(buf)
	probs, err := m.probabilities(r, p, opts.Head, opts.Scores, *buf)
	if err != nil {
		return nil, err
	}
	*buf = probs
	n := len(r.Boxes)
	nl := len(p.labels)
	perBox := max(opts.LabelsPerBox, 1)
	labelScore := make([]float64, nl)
	chosen := make([]int, 0, perBox)
	order := make([]int, 0, opts.RunnersUp)
	var kept []region
	// Every label's score is needed for runners-up and further labels;
	// otherwise, when labels are classes, only the best one's.
	allScores := !p.singleton || perBox > 1 || opts.RunnersUp > 0
	for i := range n {
		row := probs[i*p.k : (i+1)*p.k]
		best := 0
		if p.singleton {
			bestScore := row[0]
			for l, pr := range row[1:] {
				if pr > bestScore {
					best, bestScore = l+1, pr
				}
			}
			if allScores {
				for l, pr := range row {
					labelScore[l] = float64(pr)
				}
			} else {
				labelScore[best] = float64(row[best])
			}
		} else {
			clear(labelScore)
			for k, pr := range row {
				labelScore[p.labelOf[k]] += float64(pr)
			}
			bestScore := labelScore[0]
			for l, sc := range labelScore[1:] {
				if sc > bestScore {
					best, bestScore = l+1, sc
				}
			}
		}
		if p.negative[best] {
			continue
		}
		chosen = append(chosen[:0], best)
		if perBox > 1 {
			chosen = topLabels(labelScore, best, p, perBox-1, chosen)
		}
		for _, l := range chosen {
			score := float32(labelScore[l])
			thr := opts.ScoreThreshold
			if p.threshold[l] > 0 {
				thr = p.threshold[l]
			}
			if !(score >= thr) {
				continue
			}
			reg := region{index: i, label: l, score: score}
			if opts.RunnersUp > 0 {
				order = topLabels(labelScore, l, p, opts.RunnersUp, order[:0])
				reg.runnersUp = make([]detector.Candidate, len(order))
				for j, o := range order {
					reg.runnersUp[j] = detector.Candidate{Label: p.labels[o], Score: float32(labelScore[o])}
				}
			}
			kept = append(kept, reg)
		}
	}

	bx := make([][4]float32, len(kept))
	sc := make([]float32, len(kept))
	cl := make([]int, len(kept))
	for j, reg := range kept {
		bx[j], sc[j], cl[j] = r.Boxes[reg.index], reg.score, reg.label
	}
	keep := boxes.BatchedNMS(bx, sc, cl, opts.NMSIoU)
	if opts.MaxDetections > 0 {
		keep = keep[:min(len(keep), opts.MaxDetections)]
	}
	dets := make([]detector.Detection, len(keep))
	for d, j := range keep {
		reg := kept[j]
		dets[d] = detector.Detection{Label: p.labels[reg.label], Score: reg.score,
			Box: r.Boxes[reg.index], RunnersUp: reg.runnersUp}
	}
	return dets, nil
}

// topLabels appends to dst the r best non-negative labels other than
// exclude, by decreasing score (ties in label order): a partial insertion
// sort, O(L·r).
func topLabels(labelScore []float64, exclude int, p *Prepared, r int, dst []int) []int {
	if r <= 0 {
		return dst
	}
	base := len(dst)
	for l, s := range labelScore {
		if l == exclude || p.negative[l] {
			continue
		}
		last := len(dst) - 1
		if len(dst)-base == r {
			if !(s > labelScore[dst[last]]) {
				continue
			}
			dst[last] = l
		} else {
			dst = append(dst, l)
		}
		for j := len(dst) - 1; j > base && labelScore[dst[j]] > labelScore[dst[j-1]]; j-- {
			dst[j], dst[j-1] = dst[j-1], dst[j]
		}
	}
	return dst
}

// probabilityBuffers holds ScorePrepared's [N, K] probability matrices
// between calls (*[]float32), so that a request does not allocate one.
var probabilityBuffers sync.Pool

// Probabilities returns ViLD's softmax probabilities [N, K] (N regions, K
// classes of p, before labels are merged) for the given head.
func (m *Model) Probabilities(r *detector.Regions, p *Prepared, head detector.Head) ([]float32, error) {
	return m.probabilities(r, p, head, detector.ScoresSoftmax, nil)
}

// StableProbabilities is Probabilities with stable scores: each class
// normalised over the background (text head) and the reference vocabulary,
// plus itself when it is not a reference entry.
func (m *Model) StableProbabilities(r *detector.Regions, p *Prepared, head detector.Head) ([]float32, error) {
	return m.probabilities(r, p, head, detector.ScoresStable, nil)
}

// probabilities is Probabilities (or StableProbabilities) into buf's array
// when it is large enough.
func (m *Model) probabilities(r *detector.Regions, p *Prepared, head detector.Head, scores detector.Scores, buf []float32) ([]float32, error) {
	if head == "" {
		head = detector.HeadEnsemble
	}
	out, err := m.headProbabilities(r, p, head, scores, buf)
	if err != nil || head != detector.HeadEnsemble || m.Crops == nil || len(r.CropEmbeddings) == 0 {
		return out, err
	}
	return out, m.withCrops(r, p, scores, out)
}

// withCrops folds the teacher's probabilities on the regions that have crop
// embeddings into the ensemble's, out [N, K].
func (m *Model) withCrops(r *detector.Regions, p *Prepared, scores detector.Scores, out []float32) error {
	kc := len(r.CropEmbeddings)
	if kc > len(r.Boxes) {
		return fmt.Errorf("scoring: %d crop embeddings for %d regions", kc, len(r.Boxes))
	}
	if c := m.Crops; !(c.Temperature > 0) || !(c.LambdaBase >= 0 && c.LambdaBase <= 1) || !(c.LambdaNovel >= 0 && c.LambdaNovel <= 1) {
		return fmt.Errorf("scoring: crops temperature %v must be positive, lambdas %v and %v in [0, 1]", c.Temperature, c.LambdaBase, c.LambdaNovel)
	}
	// the teacher is the image head's rule at the crops' temperature, always
	// weighed against the model's own categories when it has them: the
	// teacher has no background, and among a short list of names it would
	// name a region it does not know with confidence (docs/decisions/0031)
	teacher := *m
	teacher.ImageTemperature, teacher.Crops = m.Crops.Temperature, nil
	if m.refPacked != nil {
		scores = detector.ScoresStable
	}
	crops := &detector.Regions{Boxes: r.Boxes[:kc], ImageEmbeddings: r.CropEmbeddings}
	pc, err := teacher.headProbabilities(crops, p, detector.HeadImage, scores, nil)
	if err != nil {
		return fmt.Errorf("scoring: crops: %w", err)
	}
	mu := make([]float64, p.k)
	for k := range mu {
		mu[k] = float64(m.Crops.LambdaNovel)
		if p.base[k] {
			mu[k] = float64(m.Crops.LambdaBase)
		}
	}
	// row by row, as both matrices are laid out
	for j := range kc * p.k {
		if w := mu[j%p.k]; w != 0 {
			out[j] = float32(math.Pow(float64(out[j]), 1-w) * math.Pow(float64(pc[j]), w))
		}
	}
	return nil
}

// headProbabilities is probabilities of one head, without the crops.
func (m *Model) headProbabilities(r *detector.Regions, p *Prepared, head detector.Head, scores detector.Scores, buf []float32) ([]float32, error) {
	switch head {
	case detector.HeadEnsemble, detector.HeadText, detector.HeadImage:
	default:
		return nil, fmt.Errorf("scoring: unknown head %q", head)
	}
	if scores == "" {
		scores = m.DefaultScores()
	}
	switch scores {
	case detector.ScoresSoftmax:
	case detector.ScoresStable:
		if m.refPacked == nil {
			return nil, detector.ErrScoresUnsupported
		}
		if m.refPacked.dim != p.dim {
			return nil, fmt.Errorf("scoring: the reference vocabulary has %d dimensions, the vocabulary %d: %w", m.refPacked.dim, p.dim, detector.ErrEmbeddingDim)
		}
	default:
		return nil, fmt.Errorf("scoring: unknown scores %q", scores)
	}
	if !(m.Temperature > 0) || m.ImageTemperature < 0 {
		return nil, fmt.Errorf("scoring: temperatures %v (text) and %v (image; 0: the text one) must be positive", m.Temperature, m.ImageTemperature)
	}
	n := len(r.Boxes)
	useText := head != detector.HeadImage
	useImage := head != detector.HeadText
	if useText {
		if len(m.Background) != p.dim {
			return nil, fmt.Errorf("scoring: background has %d dimensions, vocabulary %d: %w", len(m.Background), p.dim, detector.ErrEmbeddingDim)
		}
		if err := checkEmbeddings("text", r.TextEmbeddings, n, p.dim); err != nil {
			return nil, err
		}
	}
	if useImage {
		if err := checkEmbeddings("image", r.ImageEmbeddings, n, p.dim); err != nil {
			return nil, err
		}
	}
	if n == 0 {
		return []float32{}, nil
	}
	out := buf[:0]
	if cap(out) < n*p.k {
		out = make([]float32, n*p.k)
	}
	out = out[:n*p.k]
	stable := scores == detector.ScoresStable
	var classes *stableClasses
	if stable {
		classes = m.classify(p)
	}
	if m.Graph != nil && stable {
		if err := m.stableOnGraph(r, p, head, classes, out); err != nil {
			return nil, err
		}
		return out, nil
	}
	if m.Graph != nil {
		if err := m.Graph.probabilities(m, r, p, head, out); err != nil {
			return nil, err
		}
		return out, nil
	}
	workers := m.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = max(1, min(workers, n))
	chunk := (n + workers - 1) / max(workers, 1)
	var wg sync.WaitGroup
	for start := 0; start < n; start += chunk {
		end := min(start+chunk, n)
		wg.Go(func() {
			text := make([]float64, p.k)
			image := make([]float64, p.k)
			var ref []float64
			if stable {
				ref = make([]float64, len(m.Reference)/p.dim)
			}
			for i := start; i < end; i++ {
				switch {
				case stable && useText:
					m.logStable(text, ref, classes, r.TextEmbeddings[i], p, true)
				case useText:
					m.logSoftmax(text, r.TextEmbeddings[i], p, true)
				}
				switch {
				case stable && useImage:
					m.logStable(image, ref, classes, r.ImageEmbeddings[i], p, false)
				case useImage:
					m.logSoftmax(image, r.ImageEmbeddings[i], p, false)
				}
				row := out[i*p.k : (i+1)*p.k]
				lam := float64(m.Lambda)
				for k := range row {
					var lp float64
					switch {
					case head == detector.HeadText:
						lp = text[k]
					case head == detector.HeadImage:
						lp = image[k]
					case p.base[k]:
						lp = lam*text[k] + (1-lam)*image[k]
					default:
						lp = (1-lam)*text[k] + lam*image[k]
					}
					row[k] = float32(math.Exp(lp))
				}
			}
		})
	}
	wg.Wait()
	return out, nil
}

func checkEmbeddings(head string, e [][]float32, n, dim int) error {
	if len(e) != n {
		return fmt.Errorf("scoring: %d %s embeddings for %d boxes: %w", len(e), head, n, detector.ErrEmbeddingDim)
	}
	for i, v := range e {
		if len(v) != dim {
			return fmt.Errorf("scoring: region %d %s embedding has %d dimensions, vocabulary %d: %w", i, head, len(v), dim, detector.ErrEmbeddingDim)
		}
	}
	return nil
}

// logSoftmax writes the log-probabilities of the K classes for embedding e into
// dst; withBackground adds the background to the normalisation (text head).
func (m *Model) logSoftmax(dst []float64, e []float32, p *Prepared, withBackground bool) {
	similarities(dst, e, p.matrix, p.dim)
	norm, _ := m.logNormaliser(dst, e, withBackground)
	for k := range dst {
		dst[k] -= norm
	}
}

// imageTau is the image head's temperature.
func (m *Model) imageTau() float32 {
	if m.ImageTemperature > 0 {
		return m.ImageTemperature
	}
	return m.Temperature
}

// invTau is 1/τ of the text head (text) or the image head.
func (m *Model) invTau(text bool) float64 {
	if text {
		return 1 / float64(m.Temperature)
	}
	return 1 / float64(m.imageTau())
}

// logNormaliser divides the similarities in logits by the head's temperature,
// in place, and returns the log-sum-exp over them and (withBackground: the
// text head) the background's logit, with that logit (-Inf without the
// background).
func (m *Model) logNormaliser(logits []float64, e []float32, withBackground bool) (norm, bg float64) {
	inv := m.invTau(withBackground)
	hi := math.Inf(-1)
	for k := range logits {
		logits[k] *= inv
		hi = max(hi, logits[k])
	}
	bg = math.Inf(-1)
	if withBackground {
		bg = float64(dot(e, m.Background)) * inv
		hi = max(hi, bg)
	}
	sum := math.Exp(bg - hi)
	for _, l := range logits {
		sum += math.Exp(l - hi)
	}
	return hi + math.Log(sum), bg
}

// stableOnGraph is the stable probabilities with the reference vocabulary's
// softmaxes on the Graph. A reference class's probability is read from the
// softmax of its head (for the ensemble, the one weighted as its split is);
// the classes that are not reference entries take each head's log
// normaliser from that head's softmax (log p = s/τ − norm at the region's
// most probable reference row) and their own similarities, computed here.
func (m *Model) stableOnGraph(r *detector.Regions, p *Prepared, head detector.Head, classes *stableClasses, out []float32) error {
	n, rk := len(r.Boxes), m.refPacked.k
	refOf := classes.ref
	run := func(h detector.Head, ref *Prepared) ([]float32, error) {
		probs := make([]float32, n*rk)
		if err := m.Graph.probabilities(m, r, ref, h, probs); err != nil {
			return nil, err
		}
		return probs, nil
	}
	var unmatched []int
	needBase, needNovel := false, false
	for k, j := range refOf {
		switch {
		case j < 0:
			unmatched = append(unmatched, k)
		case p.base[k]:
			needBase = true
		default:
			needNovel = true
		}
	}
	// read copies the reference classes' probabilities (of one split with
	// the ensemble) from probs.
	read := func(probs []float32, split func(k int) bool) {
		for i := range n {
			row := probs[i*rk : (i+1)*rk]
			dst := out[i*p.k : (i+1)*p.k]
			for k, j := range refOf {
				if j >= 0 && split(k) {
					dst[k] = row[j]
				}
			}
		}
	}
	// logOthers is the log-probabilities [n × len(unmatched)] of the other
	// classes for one head, from that head's reference softmax.
	logOthers := func(h detector.Head, emb [][]float32, withBackground bool) ([]float64, error) {
		inv := m.invTau(h != detector.HeadImage)
		probs, err := run(h, m.refPacked)
		if err != nil {
			return nil, err
		}
		lp := make([]float64, n*len(unmatched))
		for i := range n {
			row := probs[i*rk : (i+1)*rk]
			best := 0
			for j, v := range row {
				if v > row[best] {
					best = j
				}
			}
			e := emb[i]
			norm := float64(dot(e, m.Reference[best*p.dim:(best+1)*p.dim]))*inv - math.Log(float64(row[best]))
			for u, k := range unmatched {
				l := float64(dot(e, p.matrix[k*p.dim:(k+1)*p.dim])) * inv
				rest := 1.0
				if skip := classes.replaces[k]; len(skip) > 0 {
					// summed, not 1 − the replaced rows: no cancellation
					rest = restWithout(rk, skip, func(j int) float64 { return float64(row[j]) })
					if withBackground {
						rest += math.Exp(float64(dot(e, m.Background))*inv - norm)
					}
				}
				lp[i*len(unmatched)+u] = othersLogProb(l, norm, rest)
			}
		}
		return lp, nil
	}
	all := func(int) bool { return true }
	var text, image []float64
	var err error
	switch head {
	case detector.HeadText, detector.HeadImage:
		emb := r.TextEmbeddings
		if head == detector.HeadImage {
			emb = r.ImageEmbeddings
		}
		if needBase || needNovel {
			probs, err := run(head, m.refPacked)
			if err != nil {
				return err
			}
			read(probs, all)
		}
		if len(unmatched) > 0 {
			if text, err = logOthers(head, emb, head == detector.HeadText); err != nil {
				return err
			}
			image = text
		}
	default:
		if needBase {
			probs, err := run(detector.HeadEnsemble, m.refBase)
			if err != nil {
				return err
			}
			read(probs, func(k int) bool { return p.base[k] })
		}
		if needNovel {
			probs, err := run(detector.HeadEnsemble, m.refPacked)
			if err != nil {
				return err
			}
			read(probs, func(k int) bool { return !p.base[k] })
		}
		if len(unmatched) > 0 {
			if text, err = logOthers(detector.HeadText, r.TextEmbeddings, true); err != nil {
				return err
			}
			if image, err = logOthers(detector.HeadImage, r.ImageEmbeddings, false); err != nil {
				return err
			}
		}
	}
	lam := float64(m.Lambda)
	for i := range n {
		for u, k := range unmatched {
			lt, li := text[i*len(unmatched)+u], image[i*len(unmatched)+u]
			var lp float64
			switch {
			case head != detector.HeadEnsemble:
				lp = lt
			case p.base[k]:
				lp = lam*lt + (1-lam)*li
			default:
				lp = (1-lam)*lt + lam*li
			}
			out[i*p.k+k] = float32(math.Exp(lp))
		}
	}
	return nil
}

// logStable writes the stable log-probabilities of the K classes for
// embedding e into dst: each class normalised over the reference vocabulary
// (and the background when withBackground), itself added in place of the
// rows it replaces when it is not a reference row. ref is scratch space of
// one value per reference row.
func (m *Model) logStable(dst, ref []float64, classes *stableClasses, e []float32, p *Prepared, withBackground bool) {
	inv := m.invTau(withBackground)
	similarities(dst, e, p.matrix, p.dim)
	similarities(ref, e, m.Reference, p.dim)
	norm, bg := m.logNormaliser(ref, e, withBackground) // log-sum-exp of background and reference
	for k := range dst {
		l := dst[k] * inv
		if classes.ref[k] >= 0 {
			dst[k] = l - norm
			continue
		}
		rest := 1.0
		if skip := classes.replaces[k]; len(skip) > 0 {
			rest = math.Exp(bg-norm) + restWithout(len(ref), skip, func(j int) float64 { return math.Exp(ref[j] - norm) })
		}
		dst[k] = othersLogProb(l, norm, rest)
	}
}

// similarities writes e·row_k for every row of the [len(dst), dim] matrix,
// four rows at a time so each load of e serves four products.
func similarities(dst []float64, e, matrix []float32, dim int) {
	e = e[:dim]
	k := 0
	for ; k+4 <= len(dst); k += 4 {
		r0 := matrix[k*dim : (k+1)*dim]
		r1 := matrix[(k+1)*dim : (k+2)*dim]
		r2 := matrix[(k+2)*dim : (k+3)*dim]
		r3 := matrix[(k+3)*dim : (k+4)*dim]
		var s0, s1, s2, s3 float32
		for i, v := range e {
			s0 += v * r0[i]
			s1 += v * r1[i]
			s2 += v * r2[i]
			s3 += v * r3[i]
		}
		dst[k], dst[k+1], dst[k+2], dst[k+3] = float64(s0), float64(s1), float64(s2), float64(s3)
	}
	for ; k < len(dst); k++ {
		dst[k] = float64(dot(e, matrix[k*dim:(k+1)*dim]))
	}
}

// dot is the inner product with four independent accumulators.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}
