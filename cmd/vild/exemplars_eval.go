package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/eval"
	"github.com/vild/vild/exemplar"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/vocabulary"
)

// exemplarsEvalConfig is what `vild exemplars-eval` is told.
type exemplarsEvalConfig struct {
	Annotations, Images string // the evaluated set
	// PoolAnnotations and PoolImages are the scenes exemplars are cut from:
	// other images than the evaluated ones.
	PoolAnnotations, PoolImages string
	Shots                       []int   // exemplars per novel category, one table row each
	Seed                        uint64  // which pool objects become exemplars
	MinSide                     float64 // pool objects smaller than this (either side, px) are not used
	Limit                       int     // first N evaluated images; 0 = all
	LabelsPerBox                int
	// ExemplarViews is how exemplars are cropped: "encoder", the image
	// encoder's crop scales, as the server embeds them; or "crops", the
	// views of a region the ensemble's teacher sees (embedding.crops).
	ExemplarViews string
	JSON          bool
	ProgressEvery int
	Model         modelConfig
}

func parseExemplarsEvalConfig(args []string, getenv func(string) string, stderr io.Writer) (exemplarsEvalConfig, error) {
	var c exemplarsEvalConfig
	env := &envSource{get: getenv}
	fs := flag.NewFlagSet("vild exemplars-eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Annotations, "annotations", "", "COCO `FILE` of the evaluated set (categories with split base/novel)")
	fs.StringVar(&c.Images, "images", "", "`DIR` of the evaluated set's images")
	fs.StringVar(&c.PoolAnnotations, "pool-annotations", "", "COCO `FILE` of the scenes exemplars are cut from (other images)")
	fs.StringVar(&c.PoolImages, "pool-images", "", "`DIR` of the pool's images")
	shots := fs.String("shots", "1,5", "comma-separated exemplars per novel category, one row each")
	seed := fs.Uint64("seed", 1, "seed of the choice of pool objects")
	fs.Float64Var(&c.MinSide, "min-side", 16, "smallest box side, in pixels, of a pool object used as an exemplar")
	fs.IntVar(&c.Limit, "limit", 0, "evaluate the first `N` images only (0: all)")
	fs.IntVar(&c.LabelsPerBox, "labels-per-box", 20, "labels one region may be reported with (20: COCO-style per-class output, as vild eval)")
	fs.StringVar(&c.ExemplarViews, "exemplar-views", "encoder", "how exemplars are cropped: encoder (the image encoder's views, as the server embeds exemplars) or crops (the views of a region the ensemble's teacher sees, embedding.crops)")
	fs.BoolVar(&c.JSON, "json", false, "print a JSON report instead of the table")
	fs.IntVar(&c.ProgressEvery, "progress-every", 50, "images between progress lines on stderr (0: none)")
	addModelFlags(fs, env, &c.Model)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.Seed = *seed
	errs := env.errs
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if c.Annotations == "" || c.Images == "" || c.PoolAnnotations == "" || c.PoolImages == "" {
		errs = append(errs, errors.New("give --annotations, --images, --pool-annotations and --pool-images"))
	}
	for _, s := range strings.Split(*shots, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > vocabulary.MaxExemplarsPerCategory {
			errs = append(errs, fmt.Errorf("--shots: each must be 1 to %d", vocabulary.MaxExemplarsPerCategory))
			break
		}
		c.Shots = append(c.Shots, n)
	}
	sort.Ints(c.Shots)
	if c.ExemplarViews != "encoder" && c.ExemplarViews != "crops" {
		errs = append(errs, fmt.Errorf("--exemplar-views: %q is neither encoder nor crops", c.ExemplarViews))
	}
	if c.Limit < 0 || c.ProgressEvery < 0 || c.LabelsPerBox < 1 || !(c.MinSide >= 1) {
		errs = append(errs, errors.New("--limit and --progress-every must not be negative, --labels-per-box and --min-side at least 1"))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("exemplars-eval: %w", err)
	}
	return c, nil
}

func runExemplarsEval(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parseExemplarsEvalConfig(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	gt, err := eval.ReadCOCOFile(cfg.Annotations)
	if err != nil {
		return err
	}
	pool, err := eval.ReadCOCOFile(cfg.PoolAnnotations)
	if err != nil {
		return err
	}
	m, err := loadModel(ctx, cfg.Model)
	if err != nil {
		return fmt.Errorf("exemplars-eval: load model: %w", err)
	}
	defer m.Close()
	if m.Exemplars == nil {
		return fmt.Errorf("exemplars-eval: %w", vocabulary.ErrExemplarsUnsupported)
	}
	if cfg.ExemplarViews == "crops" && len(m.CropViews.Scales) == 0 {
		return errors.New("exemplars-eval: --exemplar-views crops: the model's ensemble has no teacher's crops (embedding.crops)")
	}
	rep, err := evaluateExemplars(ctx, cfg, gt, pool, m, os.Stderr)
	if err != nil {
		return err
	}
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", " ")
		return enc.Encode(rep)
	}
	_, err = io.WriteString(stdout, rep.table())
	return err
}

// exemplarsReport is `vild exemplars-eval --json`.
type exemplarsReport struct {
	Model           string `json:"model"`
	Annotations     string `json:"annotations"`
	PoolAnnotations string `json:"pool_annotations"`
	Images          int    `json:"images"`
	Categories      int    `json:"categories"`
	Novel           int    `json:"novel_categories"`
	// Short are the novel categories the pool had fewer objects of than the
	// largest shot count: they use what there is.
	Short        []string `json:"short,omitempty"`
	Seed         uint64   `json:"seed"`
	LabelsPerBox int      `json:"labels_per_box"`
	// ExemplarViews is --exemplar-views; only "crops" is named in the table.
	ExemplarViews string        `json:"exemplar_views"`
	Seconds       float64       `json:"seconds"`
	Rows          []exemplarRow `json:"rows"`
}

type exemplarRow struct {
	Method  string        `json:"method"`
	Head    detector.Head `json:"head"`
	Summary eval.Summary  `json:"summary"`
}

// exemplarVariant is one row: a vocabulary and the head that scores it.
type exemplarVariant struct {
	method string
	head   detector.Head
	vocab  *detector.Vocabulary
}

// evaluateExemplars embeds the chosen pool objects, builds each row's
// vocabulary (every category by name, the novel ones by exemplars as the row
// says), runs every evaluated image through the detector once and scores its
// regions against each row's vocabulary.
func evaluateExemplars(ctx context.Context, cfg exemplarsEvalConfig, gt, pool *eval.COCO, m *model, stderr io.Writer) (*exemplarsReport, error) {
	start := time.Now()
	gt = gt.FirstImages(cfg.Limit)
	var names, base, novel []string
	for _, c := range gt.Categories {
		names = append(names, c.Name)
		switch c.Split {
		case "base":
			base = append(base, c.Name)
		case "novel":
			novel = append(novel, c.Name)
		}
	}
	if len(novel) == 0 {
		return nil, errors.New("exemplars-eval: the annotations mark no category novel")
	}
	most := cfg.Shots[len(cfg.Shots)-1]
	views := m.Exemplars.Views() // the encoder's own, as the server embeds exemplars
	if cfg.ExemplarViews == "crops" {
		views = m.CropViews
	}
	raw, short, err := poolExemplars(ctx, cfg, pool, novel, most, m.Exemplars, views, stderr)
	if err != nil {
		return nil, err
	}
	embs := map[string][][]float32{} // as the server embeds them: shifted across the modality gap
	for name, vs := range raw {
		for _, v := range vs {
			embs[name] = append(embs[name], m.Exemplars.Shift(v))
		}
	}
	variants, err := exemplarVariants(ctx, cfg.Shots, names, base, novel, embs, raw, m.Embedder)
	if err != nil {
		return nil, err
	}
	ids := make(map[string]int64, len(gt.Categories))
	for _, c := range gt.Categories {
		ids[c.Name] = c.ID
	}
	opts := m.Info.Defaults
	opts.RunnersUp = 0
	opts.LabelsPerBox = cfg.LabelsPerBox
	// softmax over the evaluated vocabulary, as the figures of
	// docs/exemplars.md were measured
	opts.Scores = detector.ScoresSoftmax
	dets := make([][]eval.ImageDetections, len(variants))
	for i, im := range gt.Images {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("exemplars-eval: %w", err)
		}
		r, err := evalRegions(ctx, cfg.Images, im, m.Detector)
		if err != nil {
			return nil, err
		}
		for v, x := range variants {
			o := opts
			o.Head = x.head
			res, err := m.Detector.Score(ctx, r, x.vocab, o)
			if err != nil {
				return nil, fmt.Errorf("exemplars-eval: %s: %s: %w", im.FileName, x.method, err)
			}
			d := eval.ImageDetections{ImageID: im.ID, Detections: make([]eval.Detection, 0, len(res.Detections))}
			for _, det := range res.Detections {
				x1, y1 := float64(det.Box[0]), float64(det.Box[1])
				d.Detections = append(d.Detections, eval.Detection{CategoryID: ids[det.Label],
					BBox: [4]float64{x1, y1, float64(det.Box[2]) - x1, float64(det.Box[3]) - y1}, Score: float64(det.Score)})
			}
			dets[v] = append(dets[v], d)
		}
		if done := i + 1; stderr != nil && cfg.ProgressEvery > 0 && (done%cfg.ProgressEvery == 0 || done == len(gt.Images)) {
			rate := float64(done) / max(time.Since(start).Seconds(), 1e-9)
			fmt.Fprintf(stderr, "exemplars-eval: %d/%d images (%.2f img/s, ETA %.1f min)\n", done, len(gt.Images), rate,
				float64(len(gt.Images)-done)/max(rate, 1e-9)/60)
		}
	}
	rep := &exemplarsReport{Model: m.Info.ID, Annotations: cfg.Annotations, PoolAnnotations: cfg.PoolAnnotations,
		Images: len(gt.Images), Categories: len(gt.Categories), Novel: len(novel), Short: short, Seed: cfg.Seed,
		LabelsPerBox: cfg.LabelsPerBox, ExemplarViews: cfg.ExemplarViews}
	for v, x := range variants {
		rep.Rows = append(rep.Rows, exemplarRow{Method: x.method, Head: x.head, Summary: eval.Evaluate(gt, dets[v]).Summary})
	}
	rep.Seconds = math.Round(time.Since(start).Seconds()*10) / 10
	return rep, nil
}

// poolObject is one pool annotation that may become an exemplar.
type poolObject struct {
	image int
	box   [4]float32
}

// poolExemplars chooses up to n objects of each novel category from the pool
// (both sides at least cfg.MinSide; a seeded shuffle of the pool's objects in
// file order, so the choice is reproducible and the first k of a category's n
// are its k-shot exemplars) and embeds them before the modality-gap shift,
// one decode per pool image.
// It returns each category's embeddings and the categories with fewer than n.
func poolExemplars(ctx context.Context, cfg exemplarsEvalConfig, pool *eval.COCO, novel []string, n int,
	enc *exemplar.Encoder, views exemplar.Views, stderr io.Writer) (map[string][][]float32, []string, error) {
	catName := map[int64]string{}
	for _, c := range pool.Categories {
		catName[c.ID] = c.Name
	}
	imageIndex := map[int64]int{}
	for i, im := range pool.Images {
		imageIndex[im.ID] = i
	}
	objects := map[string][]poolObject{}
	for _, a := range pool.Annotations {
		if a.BBox[2] < cfg.MinSide || a.BBox[3] < cfg.MinSide {
			continue
		}
		name := catName[a.CategoryID]
		x, y, w, h := a.BBox[0], a.BBox[1], a.BBox[2], a.BBox[3]
		objects[name] = append(objects[name], poolObject{image: imageIndex[a.ImageID],
			box: [4]float32{float32(x), float32(y), float32(x + w), float32(y + h)}})
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x76696c64))
	type slot struct {
		name string
		k    int // the exemplar's place in its category's shuffled list
		box  [4]float32
	}
	byImage := map[int][]slot{}
	out := map[string][][]float32{}
	var short []string
	for _, name := range novel {
		objs := objects[name]
		rng.Shuffle(len(objs), func(i, j int) { objs[i], objs[j] = objs[j], objs[i] })
		if len(objs) < n {
			short = append(short, name)
		}
		objs = objs[:min(n, len(objs))]
		out[name] = make([][]float32, len(objs))
		for k, o := range objs {
			byImage[o.image] = append(byImage[o.image], slot{name, k, o.box})
		}
	}
	images := make([]int, 0, len(byImage))
	for i := range byImage {
		images = append(images, i)
	}
	sort.Ints(images)
	count := 0
	for _, i := range images {
		im := pool.Images[i]
		path := filepath.Join(cfg.PoolImages, filepath.FromSlash(im.FileName))
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("exemplars-eval: pool image %d: %w", im.ID, err)
		}
		img, err := imageio.Decode(data, imageio.DefaultLimits)
		if err != nil {
			return nil, nil, fmt.Errorf("exemplars-eval: %s: %w", path, err)
		}
		slots := byImage[i]
		boxes := make([][4]float32, len(slots))
		for k, o := range slots {
			boxes[k] = o.box
		}
		embs, err := enc.EmbedUnshiftedViews(ctx, img.Image, boxes, views)
		if err != nil {
			return nil, nil, fmt.Errorf("exemplars-eval: %s: %w", path, err)
		}
		for k, o := range slots {
			out[o.name][o.k] = embs[k]
		}
		count += len(slots)
	}
	if stderr != nil {
		fmt.Fprintf(stderr, "exemplars-eval: %d exemplars of %d novel categories from %d pool images (%d categories with fewer than %d)\n",
			count, len(novel), len(images), len(short), n)
	}
	return out, short, nil
}

// exemplarVariants are the table's rows. Every category is named except, in
// the exemplar rows, the novel ones, which are defined by their first k
// exemplars alone or, in the "name + exemplars" rows, by both. The rows after
// the first k-shot ones measure the alternatives docs/exemplars.md weighs.
// embs are the exemplars' embeddings as the server makes them, raw the same
// before the modality-gap shift.
func exemplarVariants(ctx context.Context, shots []int, names, base, novel []string, embs, raw map[string][][]float32,
	emb vocabulary.Embedder) ([]exemplarVariant, error) {
	baseNames := vocabulary.BaseNames(base)
	isNovel := vocabulary.BaseNames(novel)
	build := func(spec vocabulary.Spec) (*detector.Vocabulary, error) {
		v, err := vocabulary.Build(ctx, emb, baseNames, spec)
		if err != nil {
			return nil, fmt.Errorf("exemplars-eval: vocabulary: %w", err)
		}
		return v, nil
	}
	exemplarsOf := func(embs map[string][][]float32, k int) []vocabulary.ExemplarCategory {
		var out []vocabulary.ExemplarCategory
		for _, n := range novel {
			if e := embs[n]; len(e) > 0 {
				out = append(out, vocabulary.ExemplarCategory{Label: n, Embeddings: e[:min(k, len(e))]})
			}
		}
		return out
	}
	var named []string // every category but the novel ones that have exemplars
	for _, n := range names {
		if !isNovel[vocabulary.NormName(n)] || len(embs[n]) == 0 {
			named = append(named, n)
		}
	}
	names0, err := build(vocabulary.Spec{Categories: names})
	if err != nil {
		return nil, err
	}
	rows := []exemplarVariant{{"names only", detector.HeadEnsemble, names0}}
	var last *detector.Vocabulary
	for _, k := range shots {
		v, err := build(vocabulary.Spec{Categories: named, Exemplars: exemplarsOf(embs, k)})
		if err != nil {
			return nil, err
		}
		rows = append(rows, exemplarVariant{fmt.Sprintf("%d exemplar(s), no name", k), detector.HeadEnsemble, v})
		last = v
	}
	k := shots[len(shots)-1]
	both, err := build(vocabulary.Spec{Categories: names, Exemplars: exemplarsOf(embs, k)})
	if err != nil {
		return nil, err
	}
	rows = append(rows, exemplarVariant{fmt.Sprintf("name + %d exemplar(s)", k), detector.HeadEnsemble, both})
	// Alternatives: name and exemplars as two classes under one label; the
	// exemplars without the modality-gap shift; the exemplar class weighted as
	// a base class (text head λ); one head alone.
	two := &detector.Vocabulary{Digest: "two-classes", Classes: append([]detector.Class(nil), names0.Classes...)}
	for _, c := range last.Classes {
		if c.Text == "" {
			two.Classes = append(two.Classes, c)
		}
	}
	rows = append(rows, exemplarVariant{fmt.Sprintf("name + %d exemplar(s) as two classes of one label", k), detector.HeadEnsemble, two})
	asBase := &detector.Vocabulary{Digest: "as-base"}
	for _, c := range last.Classes {
		c.Base = c.Base || c.Text == ""
		asBase.Classes = append(asBase.Classes, c)
	}
	unshifted, err := build(vocabulary.Spec{Categories: named, Exemplars: exemplarsOf(raw, k)})
	if err != nil {
		return nil, err
	}
	rows = append(rows,
		exemplarVariant{fmt.Sprintf("%d exemplar(s), without the modality-gap shift", k), detector.HeadEnsemble, unshifted},
		exemplarVariant{fmt.Sprintf("%d exemplar(s), weighted as base (text head λ)", k), detector.HeadEnsemble, asBase},
		exemplarVariant{fmt.Sprintf("%d exemplar(s), ViLD-image head alone", k), detector.HeadImage, last},
		exemplarVariant{fmt.Sprintf("%d exemplar(s), ViLD-text head alone", k), detector.HeadText, last},
		exemplarVariant{"names only, ViLD-image head alone", detector.HeadImage, names0})
	return rows, nil
}

// table is the report as a Markdown table.
func (r *exemplarsReport) table() string {
	var b strings.Builder
	cropped := ""
	if r.ExemplarViews == "crops" {
		cropped = ", cropped as the teacher's crops"
	}
	fmt.Fprintf(&b, "%s: %d images, %d categories (%d novel); exemplars from %s (seed %d%s); model %s; %d labels per box\n\n",
		r.Annotations, r.Images, r.Categories, r.Novel, r.PoolAnnotations, r.Seed, cropped, r.Model, r.LabelsPerBox)
	b.WriteString("| novel categories defined by | head | novel AP50 | base AP50 | all AP50 | novel AP |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|\n")
	for _, row := range r.Rows {
		s := row.Summary
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", row.Method, row.Head, f3(s.Novel.AP50), f3(s.Base.AP50), f3(s.All.AP50), f3(s.Novel.AP))
	}
	fmt.Fprintf(&b, "\n(%d novel categories with fewer pool objects than the largest shot count; %.1f s.)\n", len(r.Short), r.Seconds)
	return b.String()
}
