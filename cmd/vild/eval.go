package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/eval"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/mask"
	"github.com/vild/vild/vocabulary"
)

// evalConfig is what `vild eval` is told.
type evalConfig struct {
	Annotations string
	Images      string
	// Results is a COCO results file to evaluate instead of running the
	// model; ResultsDataset, the COCO dataset its ids refer to ("none": the
	// annotation file's ids).
	Results        string
	ResultsDataset string
	Heads          []detector.Head
	Limit          int // first N images; 0 = all
	// LabelsPerBox is how many labels one region may be reported with.
	LabelsPerBox int
	// Scores is the scoring mode: softmax, as the Python evaluation, unless
	// told.
	Scores detector.Scores
	// IoUType is bbox (box AP) or segm (mask AP, the model's mask head).
	IoUType eval.IoUType
	JSON    bool
	Model   modelConfig
	// ProgressEvery is how many images pass between progress lines.
	ProgressEvery int
}

// evalLabelsPerBox is the evaluation's labels per region: COCO-style
// per-class output (at the 0.05 score threshold a region's probability
// allows at most 20 labels), as training/vildtrain/evaluate/evaluate.py reports
// (docs/decisions/0006-per-class-evaluation.md).
const evalLabelsPerBox = 20

// evalMethods names each head as training/vildtrain/evaluate/evaluate.py's table does,
// in its row order.
var evalMethods = []struct {
	Head   detector.Head
	Method string
}{{detector.HeadText, "ViLD-text"}, {detector.HeadImage, "ViLD-image"}, {detector.HeadEnsemble, "ViLD-ensemble"}}

func parseEvalConfig(args []string, getenv func(string) string, stderr io.Writer) (evalConfig, error) {
	var c evalConfig
	env := &envSource{get: getenv}
	fs := flag.NewFlagSet("vild eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Annotations, "annotations", "", "COCO detection `FILE` (images, annotations, categories with split base/novel)")
	fs.StringVar(&c.Images, "images", "", "`DIR` holding the images' file_name paths")
	fs.StringVar(&c.Results, "results", "", "evaluate this COCO results `FILE` (vild detect --format coco) instead of running the model")
	fs.StringVar(&c.ResultsDataset, "results-dataset", "", "the COCO dataset `FILE` whose image and category ids --results uses, mapped to the annotations' by file_name and name (default: the results' name with .dataset.json when it exists; none: the annotations' ids)")
	head := fs.String("head", "all", "ensemble, text, image, or all three")
	fs.IntVar(&c.Limit, "limit", 0, "evaluate the first `N` images only (0: all)")
	fs.IntVar(&c.LabelsPerBox, "labels-per-box", evalLabelsPerBox, "labels one region may be reported with, each a detection: the default is COCO-style per-class output; 1 keeps each region's best label, the server's default")
	scores := fs.String("scores", string(detector.ScoresSoftmax), "softmax (over the evaluated vocabulary, as the Python evaluation) or stable (docs/api.md \"What a score means\"); with the model's own category list they give the same scores")
	iouType := fs.String("iou-type", "bbox", "bbox: box AP; segm: mask AP of the same detections' instance masks (a model with a mask head, annotations with RLE segmentations)")
	fs.BoolVar(&c.JSON, "json", false, "print a JSON report instead of the table")
	fs.IntVar(&c.ProgressEvery, "progress-every", 50, "images between progress lines on stderr (0: none)")
	addModelFlags(fs, env, &c.Model)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	errs := env.errs
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if c.Results != "" {
		// what runs the model does not apply to a results file
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "head", "labels-per-box", "scores", "progress-every", "model", "ort-lib", "intra-op-threads", "data-dir":
				errs = append(errs, fmt.Errorf("--%s runs the model; it does not apply to --results", f.Name))
			}
		})
	}
	switch {
	case c.Results != "" && c.Images != "":
		errs = append(errs, errors.New("--results evaluates a file: give --annotations COCO.json but not --images"))
	case c.Results == "" && c.ResultsDataset != "":
		errs = append(errs, errors.New("--results-dataset goes with --results"))
	case c.Annotations == "" || (c.Images == "" && c.Results == ""):
		errs = append(errs, errors.New("give --annotations COCO.json and --images DIR (or --results FILE)"))
	}
	if c.Limit < 0 || c.ProgressEvery < 0 {
		errs = append(errs, errors.New("--limit and --progress-every must not be negative"))
	}
	switch c.IoUType = eval.IoUType(*iouType); c.IoUType {
	case eval.BBox:
	case eval.Segm:
		if c.Results != "" {
			errs = append(errs, errors.New("--iou-type segm runs the model's mask head; it does not apply to --results"))
		}
	default:
		errs = append(errs, fmt.Errorf("--iou-type must be bbox or segm, not %q", *iouType))
	}
	if c.LabelsPerBox < 1 {
		errs = append(errs, errors.New("--labels-per-box must be at least 1"))
	}
	switch c.Scores = detector.Scores(*scores); c.Scores {
	case detector.ScoresSoftmax, detector.ScoresStable:
	default:
		errs = append(errs, fmt.Errorf("--scores must be softmax or stable, not %q", *scores))
	}
	switch h := detector.Head(*head); h {
	case "all":
		for _, m := range evalMethods {
			c.Heads = append(c.Heads, m.Head)
		}
	case detector.HeadEnsemble, detector.HeadText, detector.HeadImage:
		c.Heads = []detector.Head{h}
	default:
		errs = append(errs, fmt.Errorf("--head must be ensemble, text, image or all, not %q", *head))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("eval: %w", err)
	}
	return c, nil
}

func runEval(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parseEvalConfig(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	return evalWith(ctx, cfg, loadModel, stdout, os.Stderr)
}

// evalWith reads the annotations, loads the model and prints the report.
func evalWith(ctx context.Context, cfg evalConfig, load loader, stdout, stderr io.Writer) error {
	gt, err := eval.ReadCOCOFile(cfg.Annotations)
	if err != nil {
		return err
	}
	var rep *evalReport
	if cfg.Results != "" {
		rep, err = evaluateResults(cfg, gt, stderr)
	} else {
		rep, err = evaluateWithModel(ctx, cfg, gt, load, stderr)
	}
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

func evaluateWithModel(ctx context.Context, cfg evalConfig, gt *eval.COCO, load loader, stderr io.Writer) (*evalReport, error) {
	m, err := load(ctx, cfg.Model)
	if err != nil {
		return nil, fmt.Errorf("eval: load model: %w", err)
	}
	defer m.Close()
	return evaluateModel(ctx, cfg, gt, m, stderr)
}

// evaluateResults evaluates a COCO results file with the same metric: its ids
// mapped through its dataset file when there is one (file_name to file_name,
// category name to name), the first --limit images' detections kept with
// --limit.
func evaluateResults(cfg evalConfig, gt *eval.COCO, stderr io.Writer) (*evalReport, error) {
	start := time.Now()
	dets, err := eval.ReadResultsFile(cfg.Results)
	if err != nil {
		return nil, err
	}
	dsPath := cfg.ResultsDataset
	if dsPath == "" {
		if p := datasetPath(cfg.Results); p != cfg.Results {
			if _, err := os.Stat(p); err == nil {
				dsPath = p
			}
		}
	}
	if dsPath != "" && dsPath != "none" {
		ds, err := eval.ReadCOCOFile(dsPath)
		if err != nil {
			return nil, err
		}
		var st eval.MapStats
		dets, st, err = eval.MapResults(dets, ds, gt)
		if err != nil {
			return nil, fmt.Errorf("%s with %s: %w", cfg.Results, dsPath, err)
		}
		if stderr != nil {
			fmt.Fprintf(stderr, "eval: %d detections on %d images, ids mapped through %s", st.Detections, st.Images, dsPath)
			if st.UnknownImages > 0 {
				fmt.Fprintf(stderr, "; %d images (%d detections) not in the annotations left out", st.UnknownImages, st.DroppedByImage)
			}
			if st.UnknownCategories > 0 {
				fmt.Fprintf(stderr, "; %d categories (%d detections) not in the annotations left out", st.UnknownCategories, st.DroppedByCategory)
			}
			fmt.Fprintln(stderr)
		}
	}
	if cfg.Limit > 0 {
		gt = gt.FirstImages(cfg.Limit)
		dets = eval.OnImages(dets, gt)
	}
	if len(gt.Categories) == 0 {
		return nil, errors.New("eval: the annotations list no categories")
	}
	res := eval.Evaluate(gt, dets)
	rep := &evalReport{Results: cfg.Results, Annotations: cfg.Annotations, Images: len(gt.Images), Categories: len(gt.Categories)}
	rep.Heads = []headReport{headSummary("", "results", res)}
	rep.Seconds = math.Round(time.Since(start).Seconds()*10) / 10
	return rep, nil
}

// headSummary is one row of the report.
func headSummary(head detector.Head, method string, res *eval.Result) headReport {
	hr := headReport{Head: head, Method: method, Summary: res.Summary}
	for _, c := range res.Categories {
		hr.Categories = append(hr.Categories, categoryReport{ID: c.ID, Name: c.Name, Split: c.Split, NumGT: c.NumGT,
			AP: finiteOrNil(c.Mean()), AP50: finiteOrNil(c.AP50())})
	}
	return hr
}

// evalReport is `vild eval --json`. With --results, Model, ScoreThreshold,
// MaxDetections and LabelsPerBox are those of whatever wrote the file, not
// known here, and left out.
type evalReport struct {
	Model          string       `json:"model,omitempty"`
	Results        string       `json:"results,omitempty"`
	Annotations    string       `json:"annotations"`
	Images         int          `json:"images"`
	Categories     int          `json:"categories"`
	ScoreThreshold float32      `json:"score_threshold,omitempty"`
	MaxDetections  int          `json:"max_detections,omitempty"`
	LabelsPerBox   int          `json:"labels_per_box,omitempty"`
	Scores         string       `json:"scores,omitempty"`
	IoUType        eval.IoUType `json:"iou_type,omitempty"`
	Seconds        float64      `json:"seconds"`
	Heads          []headReport `json:"heads"`
}

type headReport struct {
	Head       detector.Head    `json:"head,omitempty"` // empty with --results
	Method     string           `json:"method"`
	Summary    eval.Summary     `json:"summary"`
	Categories []categoryReport `json:"categories"`
}

type categoryReport struct {
	ID    int64    `json:"id"`
	Name  string   `json:"name"`
	Split string   `json:"split,omitempty"`
	NumGT int      `json:"num_gt"`
	AP    *float64 `json:"AP"`   // null without ground truth
	AP50  *float64 `json:"AP50"` // null without ground truth
}

// evaluateModel runs every image through the detector once (Regions), scores
// the regions with each head against the annotation file's whole category
// list, with the model's post-processing defaults and cfg.LabelsPerBox (the
// settings the Python evaluation uses), and evaluates each head's detections.
func evaluateModel(ctx context.Context, cfg evalConfig, gt *eval.COCO, m *model, stderr io.Writer) (*evalReport, error) {
	start := time.Now()
	gt = gt.FirstImages(cfg.Limit)
	if len(gt.Categories) == 0 {
		return nil, errors.New("eval: the annotations list no categories")
	}
	vocab, err := evalVocabulary(ctx, gt, m)
	if err != nil {
		return nil, err
	}
	ids := make(map[string]int64, len(gt.Categories))
	for _, c := range gt.Categories {
		ids[c.Name] = c.ID
	}
	opts := m.Info.Defaults
	opts.RunnersUp = 0
	opts.LabelsPerBox = max(cfg.LabelsPerBox, 1)
	opts.Scores = cfg.Scores
	if cfg.IoUType == eval.Segm {
		if !m.Info.Masks {
			return nil, fmt.Errorf("eval: --iou-type segm: %w", detector.ErrMasksUnsupported)
		}
		opts.Masks = detector.MasksRLE
	}
	dets := make([][]eval.ImageDetections, len(cfg.Heads))
	progress := func(done int) {
		if stderr == nil || cfg.ProgressEvery == 0 || (done%cfg.ProgressEvery != 0 && done != len(gt.Images)) {
			return
		}
		el := time.Since(start).Seconds()
		rate := float64(done) / max(el, 1e-9)
		fmt.Fprintf(stderr, "eval: %d/%d images (%.2f img/s, ETA %.1f min)\n", done, len(gt.Images), rate,
			float64(len(gt.Images)-done)/max(rate, 1e-9)/60)
	}
	for i, im := range gt.Images {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
		r, err := evalRegions(ctx, cfg.Images, im, m.Detector)
		if err != nil {
			return nil, err
		}
		for h, head := range cfg.Heads {
			o := opts
			o.Head = head
			res, err := m.Detector.Score(ctx, r, vocab, o)
			if err != nil {
				return nil, fmt.Errorf("eval: %s: %s head: %w", im.FileName, head, err)
			}
			d := eval.ImageDetections{ImageID: im.ID, Detections: make([]eval.Detection, 0, len(res.Detections))}
			for _, x := range res.Detections {
				id, ok := ids[x.Label]
				if !ok {
					return nil, fmt.Errorf("eval: %s: the detector reported label %q, not a category", im.FileName, x.Label)
				}
				det := eval.Detection{CategoryID: id, BBox: eval.BoxFromCorners(x.Box), Score: float64(x.Score)}
				if x.Mask != nil {
					if det.Segm, err = mask.DecompressCounts(x.Mask.Counts); err != nil {
						return nil, fmt.Errorf("eval: %s: %w", im.FileName, err)
					}
				}
				d.Detections = append(d.Detections, det)
			}
			dets[h] = append(dets[h], d)
		}
		progress(i + 1)
	}
	rep := &evalReport{Model: m.Info.ID, Annotations: cfg.Annotations, Images: len(gt.Images),
		Categories: len(gt.Categories), ScoreThreshold: opts.ScoreThreshold, MaxDetections: opts.MaxDetections,
		LabelsPerBox: opts.LabelsPerBox, Scores: string(opts.Scores), IoUType: cfg.IoUType}
	for h, head := range cfg.Heads {
		res, err := eval.EvaluateType(gt, dets[h], cfg.IoUType)
		if err != nil {
			return nil, err
		}
		rep.Heads = append(rep.Heads, headSummary(head, methodName(head), res))
	}
	rep.Seconds = math.Round(time.Since(start).Seconds()*10) / 10
	return rep, nil
}

// evalVocabulary embeds every category name (the bundle's precomputed
// embeddings serve names it knows). A category is base when the file says so;
// without a split, when the model was trained on it.
func evalVocabulary(ctx context.Context, gt *eval.COCO, m *model) (*detector.Vocabulary, error) {
	modelBase := vocabulary.BaseNames(m.Info.BaseCategories)
	names := make([]string, 0, len(gt.Categories))
	var base []string
	for _, c := range gt.Categories {
		names = append(names, c.Name)
		if c.Split == "base" || (c.Split == "" && modelBase[vocabulary.NormName(c.Name)]) {
			base = append(base, c.Name)
		}
	}
	vocab, err := vocabulary.Build(ctx, m.Embedder, vocabulary.BaseNames(base), vocabulary.Spec{Categories: names})
	if err != nil {
		return nil, fmt.Errorf("eval: vocabulary: %w", err)
	}
	return vocab, nil
}

// evalRegions reads, decodes and checks one image and runs the
// vocabulary-independent stages on it.
func evalRegions(ctx context.Context, dir string, im eval.Image, d detector.Detector) (*detector.Regions, error) {
	path := filepath.Join(dir, filepath.FromSlash(im.FileName))
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("eval: image %d: %w", im.ID, err)
	}
	img, err := imageio.Decode(data, imageio.DefaultLimits)
	if err != nil {
		return nil, fmt.Errorf("eval: %s: %w", path, err)
	}
	if b := img.Image.Bounds(); b.Dx() != im.Width || b.Dy() != im.Height {
		return nil, fmt.Errorf("eval: %s is %dx%d but the annotations say %dx%d", path, b.Dx(), b.Dy(), im.Width, im.Height)
	}
	r, err := d.Regions(ctx, img.Image)
	if err != nil {
		return nil, fmt.Errorf("eval: %s: %w", path, err)
	}
	return r, nil
}

func methodName(h detector.Head) string {
	for _, m := range evalMethods {
		if m.Head == h {
			return m.Method
		}
	}
	return string(h)
}

func finiteOrNil(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// table is the report in the layout of the Python evaluation's per-set table
// (three decimals, "nan" for a group without ground truth), so the two diff.
func (r *evalReport) table() string {
	var b strings.Builder
	if r.Results != "" {
		fmt.Fprintf(&b, "%s: %d images, %d categories, results %s\n\n", r.Annotations, r.Images, r.Categories, r.Results)
	} else {
		fmt.Fprintf(&b, "%s: %d images, %d categories, model %s (score threshold %g, at most %d detections per image, %d labels per box)\n\n",
			r.Annotations, r.Images, r.Categories, r.Model, r.ScoreThreshold, r.MaxDetections, r.LabelsPerBox)
		if r.IoUType == eval.Segm {
			b.WriteString("Mask AP (segm): detections matched by the IoU of their instance masks.\n\n")
		}
	}
	b.WriteString("| method | novel AP | novel AP50 | base AP | base AP50 | all AP | all AP50 |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	for _, h := range r.Heads {
		s := h.Summary
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", h.Method,
			f3(s.Novel.AP), f3(s.Novel.AP50), f3(s.Base.AP), f3(s.Base.AP50), f3(s.All.AP), f3(s.All.AP50))
	}
	if len(r.Heads) > 0 {
		s := r.Heads[0].Summary
		fmt.Fprintf(&b, "\n(%d novel and %d base categories with ground truth; AP = AP@[.5:.95]; %.1f s.)\n",
			s.Novel.Categories, s.Base.Categories, r.Seconds)
	}
	return b.String()
}

func f3(v float64) string {
	if math.IsNaN(v) {
		return "nan"
	}
	return fmt.Sprintf("%.3f", v)
}
