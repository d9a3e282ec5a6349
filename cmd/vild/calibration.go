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
	"strconv"
	"strings"
	"time"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/eval"
)

// calibrationConfig is what `vild calibration` is told: how a detection's
// score means the same in vocabularies of different sizes
// (docs/evaluation.md "Calibration").
type calibrationConfig struct {
	Annotations  string
	Images       string
	Limit        int
	Sizes        []int
	Absent       int // size of the absent-names vocabulary; 0: none
	Scores       []detector.Scores
	Head         detector.Head
	Seed         uint64
	LabelsPerBox int
	JSON         bool
	Model        modelConfig
}

// The protocol's constants (docs/evaluation.md "Calibration").
const (
	calibrationBins      = 15  // ECE bins over [0, 1]
	calibrationIoU       = 0.5 // a detection is correct at this IoU with an unmatched box of its label
	calibrationThreshold = 0.3 // recall is counted at this score
)

func parseCalibrationConfig(args []string, getenv func(string) string, stderr io.Writer) (calibrationConfig, error) {
	c := calibrationConfig{Head: detector.HeadEnsemble}
	env := &envSource{get: getenv}
	fs := flag.NewFlagSet("vild calibration", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Annotations, "annotations", "", "COCO detection `FILE` (images, annotations, categories)")
	fs.StringVar(&c.Images, "images", "", "`DIR` holding the images' file_name paths")
	fs.IntVar(&c.Limit, "limit", 60, "measure on the first `N` images (0: all)")
	sizes := fs.String("sizes", "10,100,all", "vocabulary sizes, comma-separated: each image's ground-truth names plus random other categories up to the size (all: every category)")
	fs.IntVar(&c.Absent, "absent", 10, "also score each image against `N` random names none of which is in it (every detection wrong); 0: not")
	scores := fs.String("scores", "stable,softmax", "scoring modes to compare, comma-separated: stable, softmax")
	head := fs.String("head", "ensemble", "ensemble, text or image")
	seed := fs.Uint64("seed", 0, "seed of the random names")
	fs.IntVar(&c.LabelsPerBox, "labels-per-box", 1, "labels one region may be reported with (1: its best, the server's default)")
	fs.BoolVar(&c.JSON, "json", false, "print a JSON report instead of the table")
	addModelFlags(fs, env, &c.Model)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.Seed = *seed
	errs := env.errs
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if c.Annotations == "" || c.Images == "" {
		errs = append(errs, errors.New("give --annotations COCO.json and --images DIR"))
	}
	if c.Limit < 0 || c.Absent < 0 {
		errs = append(errs, errors.New("--limit and --absent must not be negative"))
	}
	if c.LabelsPerBox < 1 {
		errs = append(errs, errors.New("--labels-per-box must be at least 1"))
	}
	for _, s := range strings.Split(*sizes, ",") {
		s = strings.TrimSpace(s)
		if s == "all" {
			c.Sizes = append(c.Sizes, 0)
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("--sizes: %q is not a positive size or all", s))
			continue
		}
		c.Sizes = append(c.Sizes, n)
	}
	for _, s := range strings.Split(*scores, ",") {
		switch m := detector.Scores(strings.TrimSpace(s)); m {
		case detector.ScoresStable, detector.ScoresSoftmax:
			c.Scores = append(c.Scores, m)
		default:
			errs = append(errs, fmt.Errorf("--scores: %q is not stable or softmax", s))
		}
	}
	switch c.Head = detector.Head(*head); c.Head {
	case detector.HeadEnsemble, detector.HeadText, detector.HeadImage:
	default:
		errs = append(errs, fmt.Errorf("--head must be ensemble, text or image, not %q", *head))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("calibration: %w", err)
	}
	return c, nil
}

func runCalibration(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parseCalibrationConfig(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	gt, err := eval.ReadCOCOFile(cfg.Annotations)
	if err != nil {
		return err
	}
	m, err := loadModel(ctx, cfg.Model)
	if err != nil {
		return fmt.Errorf("calibration: load model: %w", err)
	}
	defer m.Close()
	rep, err := measureCalibration(ctx, cfg, gt, m, os.Stderr)
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

// calibrationReport is `vild calibration --json`.
type calibrationReport struct {
	Model          string           `json:"model"`
	Annotations    string           `json:"annotations"`
	Images         int              `json:"images"`
	Head           detector.Head    `json:"head"`
	Seed           uint64           `json:"seed"`
	ScoreThreshold float32          `json:"score_threshold"`
	LabelsPerBox   int              `json:"labels_per_box"`
	Seconds        float64          `json:"seconds"`
	Rows           []calibrationRow `json:"rows"`
}

// calibrationRow is one scoring mode at one vocabulary size.
type calibrationRow struct {
	Scores detector.Scores `json:"scores"`
	Size   int             `json:"size"` // names per image (at most the categories)
	// Absent: the names are none of the image's (median and recall are 0).
	Absent bool `json:"absent,omitempty"`
	// MedianTrueScore is the median score of the ground-truth boxes found.
	MedianTrueScore float64 `json:"median_true_score"`
	// Recall is the share of ground-truth boxes found with a score ≥ 0.3.
	Recall     float64 `json:"recall_at_0.3"`
	ECE        float64 `json:"ece"`
	AP50       float64 `json:"AP50"`
	Detections int     `json:"detections"`
	// Wrong is the wrong detections with a score ≥ 0.3 per image.
	Wrong float64 `json:"wrong_at_0.3_per_image"`
}

func (r *calibrationReport) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "model %s, %d images, %s head, score ≥ %g, %d label(s) per box, seed %d\n\n",
		r.Model, r.Images, r.Head, r.ScoreThreshold, r.LabelsPerBox, r.Seed)
	b.WriteString("| scores | names | median true-box score | recall at ≥ 0.3 | ECE | AP50 | detections | wrong ≥ 0.3 per image |\n|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		if row.Absent {
			fmt.Fprintf(&b, "| %s | %d absent | – | – | %.3f | – | %d | %.2f |\n", row.Scores, row.Size, row.ECE, row.Detections, row.Wrong)
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %.3f | %.3f | %.3f | %.3f | %d | %.2f |\n", row.Scores, row.Size,
			row.MedianTrueScore, row.Recall, row.ECE, row.AP50, row.Detections, row.Wrong)
	}
	return b.String()
}

// calibrationVocabulary is an image's names at one size: its ground-truth
// names, then the other categories in a random order seeded by seed and the
// image id (the same order at every size, so a smaller vocabulary is part of
// a larger one), up to size names (0: all). With absent, the ground-truth
// names are left out.
func calibrationVocabulary(names []string, truth map[string]bool, size int, absent bool, seed uint64, imageID int64) map[string]bool {
	out := make(map[string]bool, len(truth))
	var others []string
	for _, n := range names {
		switch {
		case !truth[n]:
			others = append(others, n)
		case !absent:
			out[n] = true
		}
	}
	rng := rand.New(rand.NewPCG(seed, uint64(imageID)))
	rng.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	for _, n := range others {
		if size > 0 && len(out) >= size {
			break
		}
		out[n] = true
	}
	return out
}

// measureCalibration runs every image once (Regions) and scores it with
// every mode at every size.
func measureCalibration(ctx context.Context, cfg calibrationConfig, gt *eval.COCO, m *model, stderr io.Writer) (*calibrationReport, error) {
	start := time.Now()
	gt = gt.FirstImages(cfg.Limit)
	if len(gt.Categories) == 0 {
		return nil, errors.New("calibration: the annotations list no categories")
	}
	full, err := evalVocabulary(ctx, gt, m)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(gt.Categories))
	catName := make(map[int64]string, len(gt.Categories))
	ids := make(map[string]int64, len(gt.Categories))
	for i, c := range gt.Categories {
		names[i] = c.Name
		catName[c.ID] = c.Name
		ids[c.Name] = c.ID
	}
	truth := make(map[int64][]eval.Box)
	for _, a := range gt.Annotations {
		b := a.BBox
		truth[a.ImageID] = append(truth[a.ImageID], eval.Box{Label: catName[a.CategoryID], Box: [4]float64{b[0], b[1], b[0] + b[2], b[1] + b[3]}})
	}
	opts := m.Info.Defaults
	opts.RunnersUp = 0
	opts.Head = cfg.Head
	opts.LabelsPerBox = cfg.LabelsPerBox
	opts.Masks = detector.MasksNone
	type cell struct {
		scored  []eval.Scored
		gtScore []float64
		dets    []eval.ImageDetections
	}
	sizes := cfg.Sizes
	if cfg.Absent > 0 {
		sizes = append(sizes[:len(sizes):len(sizes)], cfg.Absent) // the last, absent
	}
	cells := make([]cell, len(cfg.Scores)*len(sizes))
	for i, im := range gt.Images {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("calibration: %w", err)
		}
		r, err := evalRegions(ctx, cfg.Images, im, m.Detector)
		if err != nil {
			return nil, err
		}
		present := make(map[string]bool)
		for _, b := range truth[im.ID] {
			present[b.Label] = true
		}
		for si, size := range sizes {
			keep := calibrationVocabulary(names, present, size, si == len(cfg.Sizes), cfg.Seed, im.ID)
			vocab := &detector.Vocabulary{}
			for _, c := range full.Classes {
				if keep[c.Label] {
					vocab.Classes = append(vocab.Classes, c)
				}
			}
			for mi, mode := range cfg.Scores {
				o := opts
				o.Scores = mode
				res, err := m.Detector.Score(ctx, r, vocab, o)
				if err != nil {
					return nil, fmt.Errorf("calibration: %s: %w", im.FileName, err)
				}
				boxes := make([]eval.Box, len(res.Detections))
				scores := make([]float64, len(res.Detections))
				d := eval.ImageDetections{ImageID: im.ID}
				for j, x := range res.Detections {
					boxes[j] = eval.Box{Label: x.Label, Box: [4]float64{float64(x.Box[0]), float64(x.Box[1]), float64(x.Box[2]), float64(x.Box[3])}}
					scores[j] = float64(x.Score)
					d.Detections = append(d.Detections, eval.Detection{CategoryID: ids[x.Label], BBox: eval.BoxFromCorners(x.Box), Score: float64(x.Score)})
				}
				correct, gtScore := eval.MatchGreedy(truth[im.ID], boxes, scores, calibrationIoU)
				c := &cells[mi*len(sizes)+si]
				for j := range correct {
					c.scored = append(c.scored, eval.Scored{Score: scores[j], Correct: correct[j]})
				}
				c.gtScore = append(c.gtScore, gtScore...)
				c.dets = append(c.dets, d)
			}
		}
		if stderr != nil && ((i+1)%20 == 0 || i+1 == len(gt.Images)) {
			fmt.Fprintf(stderr, "calibration: %d/%d images\n", i+1, len(gt.Images))
		}
	}
	rep := &calibrationReport{Model: m.Info.ID, Annotations: cfg.Annotations, Images: len(gt.Images), Head: cfg.Head,
		Seed: cfg.Seed, ScoreThreshold: opts.ScoreThreshold, LabelsPerBox: opts.LabelsPerBox}
	for mi, mode := range cfg.Scores {
		for si, size := range sizes {
			c := cells[mi*len(sizes)+si]
			if size == 0 || size > len(names) {
				size = len(names)
			}
			wrong := 0
			for _, d := range c.scored {
				if !d.Correct && d.Score >= calibrationThreshold {
					wrong++
				}
			}
			row := calibrationRow{Scores: mode, Size: size, ECE: round3(eval.ECE(c.scored, calibrationBins)),
				Detections: len(c.scored), Wrong: round3(float64(wrong) / float64(len(gt.Images)))}
			if si == len(cfg.Sizes) {
				row.Absent = true
			} else {
				med, rec := eval.TrueBoxStats(c.gtScore, calibrationThreshold)
				row.MedianTrueScore, row.Recall = round3(med), round3(rec)
				row.AP50 = round3(eval.Evaluate(gt, c.dets).Summary.All.AP50)
			}
			rep.Rows = append(rep.Rows, row)
		}
	}
	rep.Seconds = math.Round(time.Since(start).Seconds()*10) / 10
	return rep, nil
}

// round3 rounds to three decimals, NaN to 0 (JSON has no NaN).
func round3(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return math.Round(v*1000) / 1000
}
