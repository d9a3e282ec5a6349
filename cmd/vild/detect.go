package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vild/vild/annotate"
	"github.com/vild/vild/api"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/exemplar"
	"github.com/vild/vild/handlers"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/request"
	"github.com/vild/vild/vocabulary"
)

// detectConfig is what `vild detect` is told.
type detectConfig struct {
	Images         []string // files and folders
	Categories     []string
	Server         string // detect through this vild server instead of a model in this process
	APIKey         string // the server's API key (--api-key, VILD_API_KEY)
	Out            string
	Format         string // where results go: outStdout, outImage, formatCOCO or formatJSONL
	Dataset        string // --format coco: the dataset file
	Workers        int
	Progress       bool
	Model          modelConfig
	ScoreThreshold float64
	MaxDetections  int
	LabelsPerBox   int
	Head           string
	Masks          detector.Masks  // instance masks: none, rle or polygon
	Scores         detector.Scores // stable or softmax; empty: the model's default
	Exemplars      []exemplarArg   // categories defined by example crops (--exemplar)
}

// exemplarArg is one --exemplar LABEL=IMAGE:X1,Y1,X2,Y2: an example crop of
// the category LABEL, the box in IMAGE's pixels (docs/exemplars.md).
type exemplarArg struct {
	Label string
	Path  string
	Box   [4]float32
}

// parseExemplarArg reads LABEL=IMAGE:X1,Y1,X2,Y2 (the label up to the first
// "=", so a label holds no "="; the box after the last ":").
func parseExemplarArg(s string) (exemplarArg, error) {
	const form = "LABEL=IMAGE:X1,Y1,X2,Y2"
	label, rest, ok := strings.Cut(s, "=")
	colon := strings.LastIndex(rest, ":")
	if !ok || colon < 0 {
		return exemplarArg{}, fmt.Errorf("%q is not %s", s, form)
	}
	e := exemplarArg{Label: strings.TrimSpace(label), Path: strings.TrimSpace(rest[:colon])}
	if e.Label == "" || e.Path == "" {
		return exemplarArg{}, fmt.Errorf("%q is not %s: the label and the image must not be empty", s, form)
	}
	parts := strings.Split(rest[colon+1:], ",")
	if len(parts) != 4 {
		return exemplarArg{}, fmt.Errorf("%q is not %s: the box is four numbers", s, form)
	}
	for i, p := range parts {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 32)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return exemplarArg{}, fmt.Errorf("%q is not %s: %q is not a number", s, form, p)
		}
		e.Box[i] = float32(v)
	}
	return e, nil
}

// Where `vild detect` writes (detectConfig.Format).
const (
	outStdout   = "stdout" // one JSON line per image on stdout
	outImage    = "image"  // JSON line on stdout and the annotated picture in --out
	formatCOCO  = "coco"   // --out: COCO results, and the COCO dataset in --dataset
	formatJSONL = "jsonl"  // --out: one JSON line per image
)

// detectResult is one image's line of output.
type detectResult struct {
	File             string               `json:"file"`
	Model            string               `json:"model"`
	VocabularyDigest string               `json:"vocabulary_digest"`
	Image            api.ImageSize        `json:"image"`
	Detections       []detector.Detection `json:"detections"`
	Milliseconds     float64              `json:"milliseconds"`
}

// parseDetectConfig parses flags that may come before or after the images.
func parseDetectConfig(args []string, getenv func(string) string, stderr io.Writer) (detectConfig, error) {
	var c detectConfig
	env := &envSource{get: getenv}
	fs := flag.NewFlagSet("vild detect IMAGE|DIR...", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cats := fs.String("categories", "", `comma-separated category names, e.g. "dog,red umbrella"; empty: the model's vocabulary`)
	fs.StringVar(&c.Out, "out", "", "`FILE`: .png/.jpg: the annotated image (one image only); .json: COCO results (--format coco); .jsonl: JSON lines; empty: JSON lines on stdout")
	format := fs.String("format", "", "results format of --out: coco or jsonl (default: by --out's extension)")
	fs.StringVar(&c.Dataset, "dataset", "", "--format coco: where the COCO dataset goes (default: --out's name with .dataset.json)")
	fs.IntVar(&c.Workers, "workers", defaultWorkers(), fmt.Sprintf("images detected at once (1 to %d)", maxDetectWorkers))
	fs.BoolVar(&c.Progress, "progress", true, "report progress on stderr when there is more than one image")
	fs.Float64Var(&c.ScoreThreshold, "score-threshold", -1, "minimum score (default: the model's)")
	fs.IntVar(&c.MaxDetections, "max-detections", 0, "detections per image (default: the model's)")
	fs.IntVar(&c.LabelsPerBox, "labels-per-box", 0, "labels one region may be reported with, each a detection (default: the model's)")
	fs.StringVar(&c.Head, "head", "ensemble", "ensemble, text or image")
	scores := fs.String("scores", "", "what a score is a probability over: stable (each name against the model's own categories, whatever the other names) or softmax (over the given names); empty: the model's default")
	masks := fs.String("masks", "", "instance masks of the detections: rle or polygon (a model with a mask head; empty: none)")
	fs.Func("exemplar", "`LABEL=IMAGE:X1,Y1,X2,Y2`: define the category LABEL by an example, the box in IMAGE's pixels (repeat it: up to 8 per label, 32 in all; a label that is one of --categories adds to that name; without --categories the examples' labels are the vocabulary)",
		func(v string) error {
			e, err := parseExemplarArg(v)
			if err == nil {
				c.Exemplars = append(c.Exemplars, e)
			}
			return err
		})
	fs.StringVar(&c.Server, "server", getenv("VILD_SERVER"), "detect through the vild server at `URL` (e.g. http://127.0.0.1:8080) instead of loading the model here (env VILD_SERVER)")
	fs.StringVar(&c.APIKey, "api-key", "", "the server's API key, vild_… (default: env VILD_API_KEY)")
	addModelFlags(fs, env, &c.Model)
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return c, err
		}
		args = fs.Args()
		if len(args) > 0 {
			c.Images = append(c.Images, args[0])
			args = args[1:]
		}
	}
	if err := errors.Join(env.errs...); err != nil {
		return c, err
	}
	if c.APIKey == "" {
		c.APIKey = getenv("VILD_API_KEY")
	}
	if c.APIKey != "" && c.Server == "" {
		return c, errors.New("detect: --api-key goes with --server URL")
	}
	if c.Server != "" {
		var local []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "model" || f.Name == "ort-lib" || f.Name == "intra-op-threads" || f.Name == "data-dir" {
				local = append(local, "--"+f.Name)
			}
		})
		if len(local) > 0 {
			return c, fmt.Errorf("detect: %s choose a model in this process; with --server the server's model detects", strings.Join(local, ", "))
		}
	}
	if len(c.Images) == 0 {
		return c, errors.New(`detect: give at least one image or folder: vild detect IMAGE|DIR... --categories "a,b,c"`)
	}
	for _, s := range strings.Split(*cats, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.Categories = append(c.Categories, s)
		}
	}
	perLabel := map[string]int{} // labels match as the API matches them: case and spaces aside
	for _, e := range c.Exemplars {
		k := vocabulary.NormName(e.Label)
		if perLabel[k]++; perLabel[k] > vocabulary.MaxExemplarsPerCategory {
			return c, fmt.Errorf("detect: --exemplar: at most %d examples of one label (%q)", vocabulary.MaxExemplarsPerCategory, e.Label)
		}
	}
	if len(c.Exemplars) > vocabulary.MaxExemplars {
		return c, fmt.Errorf("detect: --exemplar: at most %d examples in all", vocabulary.MaxExemplars)
	}
	switch detector.Head(c.Head) {
	case detector.HeadEnsemble, detector.HeadText, detector.HeadImage:
	default:
		return c, fmt.Errorf("detect: --head must be ensemble, text or image")
	}
	if c.LabelsPerBox < 0 {
		return c, fmt.Errorf("detect: --labels-per-box must not be negative")
	}
	switch c.Scores = detector.Scores(*scores); c.Scores {
	case "", detector.ScoresStable, detector.ScoresSoftmax:
	default:
		return c, fmt.Errorf("detect: --scores must be stable or softmax")
	}
	switch c.Masks = detector.Masks(*masks); c.Masks {
	case detector.MasksNone, detector.MasksRLE, detector.MasksPolygon:
	default:
		return c, fmt.Errorf("detect: --masks must be rle or polygon")
	}
	if c.Workers < 1 || c.Workers > maxDetectWorkers {
		return c, fmt.Errorf("detect: --workers must be 1 to %d", maxDetectWorkers)
	}
	if c.Model.IntraOpThreads == 0 {
		c.Model.IntraOpThreads = max(1, runtime.GOMAXPROCS(0)/c.Workers)
	}
	var err error
	if c.Format, err = outputFormat(c.Out, *format); err != nil {
		return c, err
	}
	if c.Format == outImage && len(c.Images) != 1 {
		return c, errors.New("detect: --out with an image name takes one image; use --out results.json for many")
	}
	if c.Dataset != "" && c.Format != formatCOCO {
		return c, errors.New("detect: --dataset goes with --format coco")
	}
	if c.Format == formatCOCO && c.Dataset == "" {
		c.Dataset = datasetPath(c.Out)
	}
	if c.Format == formatCOCO && filepath.Clean(c.Dataset) == filepath.Clean(c.Out) {
		return c, errors.New("detect: --dataset and --out must be different files")
	}
	return c, nil
}

// outputFormat decides where results go from --out's extension and --format.
func outputFormat(out, format string) (string, error) {
	switch format {
	case "", formatCOCO, formatJSONL:
	default:
		return "", fmt.Errorf("detect: --format must be coco or jsonl, not %q", format)
	}
	ext := strings.ToLower(filepath.Ext(out))
	switch {
	case out == "":
		if format != "" {
			return "", errors.New("detect: --format needs --out FILE")
		}
		return outStdout, nil
	case ext == ".png" || ext == ".jpg" || ext == ".jpeg":
		if format != "" {
			return "", fmt.Errorf("detect: --out %s is an annotated image; name a .json or .jsonl file for --format %s", out, format)
		}
		return outImage, nil
	case format != "":
		return format, nil
	case ext == ".json":
		return formatCOCO, nil
	case ext == ".jsonl":
		return formatJSONL, nil
	}
	return "", fmt.Errorf("detect: --out %s: name a .png or .jpg (annotated image), .json (COCO) or .jsonl file, or give --format", out)
}

func runDetect(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parseDetectConfig(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	inputs, err := collectInputs(cfg.Images)
	if err != nil {
		return err
	}
	if cfg.Server != "" {
		return detectRemote(ctx, cfg, inputs, stdout, os.Stderr)
	}
	m, err := loadModel(ctx, cfg.Model)
	if err != nil {
		return fmt.Errorf("detect: load model: %w", err)
	}
	defer m.Close()
	return detectFiles(ctx, cfg, inputs, m, stdout, os.Stderr)
}

// detectFiles builds the vocabulary and the options from cfg and runs the
// model over the inputs.
func detectFiles(ctx context.Context, cfg detectConfig, inputs []batchInput, m *model, stdout, stderr io.Writer) error {
	if cfg.Format == outImage && len(inputs) != 1 {
		return fmt.Errorf("detect: --out %s takes one image, not %d; use --out results.json for many", cfg.Out, len(inputs))
	}
	names := cfg.Categories
	if len(names) == 0 && len(cfg.Exemplars) == 0 {
		names = m.Info.Categories
	}
	if len(names) == 0 && len(cfg.Exemplars) == 0 {
		return errors.New("detect: give --categories (the model has no default vocabulary)")
	}
	names = dedupe(names)
	spec := vocabulary.Spec{Categories: names}
	if len(cfg.Exemplars) > 0 {
		ex, err := embedExemplars(ctx, m.Embedder, cfg.Exemplars)
		if err != nil {
			return err
		}
		if spec, err = vocabulary.Normalize(vocabulary.Spec{Categories: names, Exemplars: ex},
			vocabulary.Limits{MaxNames: len(names) + len(ex), MaxNameLength: handlers.DefaultConfig().MaxCategoryLength}); err != nil {
			return fmt.Errorf("detect: %w", err)
		}
	}
	vocab, err := vocabulary.Build(ctx, m.Embedder, vocabulary.BaseNames(m.Info.BaseCategories), spec)
	if err != nil {
		return fmt.Errorf("detect: %w", err)
	}
	opts := m.Info.Defaults
	opts.Head = detector.Head(cfg.Head)
	if opts.RunnersUp == 0 {
		opts.RunnersUp = 3
	}
	if cfg.ScoreThreshold >= 0 {
		opts.ScoreThreshold = float32(cfg.ScoreThreshold)
	}
	if cfg.MaxDetections > 0 {
		opts.MaxDetections = cfg.MaxDetections
	}
	if cfg.LabelsPerBox > 0 {
		opts.LabelsPerBox = cfg.LabelsPerBox
	}
	if cfg.Masks != detector.MasksNone && !m.Info.Masks {
		return fmt.Errorf("detect: --masks: %w", detector.ErrMasksUnsupported)
	}
	opts.Masks = cfg.Masks
	if cfg.Scores != "" {
		if cfg.Scores == detector.ScoresStable && m.Info.Defaults.Scores != detector.ScoresStable {
			return fmt.Errorf("detect: --scores stable: %w", detector.ErrScoresUnsupported)
		}
		opts.Scores = cfg.Scores
	}
	det := localDetector{det: m.Detector, vocab: vocab, opts: opts, limits: imageio.DefaultLimits}
	fp := runFingerprint{Model: m.Info.ID, VocabularyDigest: vocab.Digest, Categories: withExampleLabels(names, cfg.Exemplars), Head: opts.Head,
		ScoreThreshold: opts.ScoreThreshold, NMSIoU: opts.NMSIoU, MaxDetections: opts.MaxDetections,
		LabelsPerBox: opts.LabelsPerBox, RunnersUp: opts.RunnersUp, Masks: opts.Masks, Scores: cfg.Scores}
	b := batch{cfg: cfg, inputs: inputs, det: det, fp: fp, stderr: stderr}
	if cfg.Format == formatCOCO || cfg.Format == formatJSONL {
		return b.toFile(ctx)
	}
	return b.toStdout(ctx, stdout)
}

// withExampleLabels is the labels a run reports: the names, then each
// example's label that is not one of them (its own category).
func withExampleLabels(names []string, ex []exemplarArg) []string {
	out := slices.Clone(names)
	for _, e := range ex {
		out = append(out, e.Label)
	}
	return dedupe(out)
}

// groupByLabel runs each over the --exemplar arguments and groups the
// results by label, in the order the labels first appear, as the API takes
// exemplar categories.
func groupByLabel[T any](args []exemplarArg, each func(exemplarArg) (T, error)) (labels []string, groups [][]T, err error) {
	at := map[string]int{}
	for _, e := range args {
		v, err := each(e)
		if err != nil {
			return nil, nil, err
		}
		k := vocabulary.NormName(e.Label) // one label whatever its case, in its first spelling
		i, ok := at[k]
		if !ok {
			i = len(labels)
			at[k] = i
			labels, groups = append(labels, e.Label), append(groups, nil)
		}
		groups[i] = append(groups[i], v)
	}
	return labels, groups, nil
}

// maxRemoteExemplarBytes bounds the example images sent with every image
// through --server: their base64 (4/3 of their bytes) and the image's must
// fit the server's JSON body cap (28 MiB by default, docs/api.md "Limits"),
// so this leaves 8 MiB of it to the image: 15 MiB.
var maxRemoteExemplarBytes = int((handlers.DefaultConfig().MaxJSONImageBytes - 8<<20) * 3 / 4)

// readExemplars reads the --exemplar images, for a server to embed, each
// decoded and its box checked here first, so that a bad one is named by its
// file before the folder starts.
func readExemplars(args []exemplarArg) ([]api.ExemplarCategory, error) {
	total := 0
	labels, groups, err := groupByLabel(args, func(e exemplarArg) (api.Exemplar, error) {
		data, _, err := decodeExemplar(e)
		total += len(data)
		return api.Exemplar{Image: data, Box: e.Box}, err
	})
	if err != nil {
		return nil, err
	}
	if total > maxRemoteExemplarBytes {
		return nil, fmt.Errorf("detect: --exemplar: the example images hold %.1f MiB, and through --server they travel with every image, "+
			"within the server's JSON body cap: at most %d MiB together (crop them, or detect in this process without --server)",
			float64(total)/(1<<20), maxRemoteExemplarBytes>>20)
	}
	out := make([]api.ExemplarCategory, len(labels))
	for i, l := range labels {
		out[i] = api.ExemplarCategory{Label: l, Exemplars: groups[i]}
	}
	return out, nil
}

// decodeExemplar reads and decodes an --exemplar image within the server's
// default image limits (EXIF orientation applied, as the server does) and
// checks its box; it returns the file and the picture.
func decodeExemplar(e exemplarArg) ([]byte, image.Image, error) {
	data, err := readExemplarImage(e.Path)
	if err != nil {
		return nil, nil, err
	}
	img, err := imageio.Decode(data, imageio.DefaultLimits)
	if err != nil {
		return nil, nil, fmt.Errorf("detect: --exemplar %s: %w", e.Path, err)
	}
	b := img.Image.Bounds()
	if err := exemplar.CheckBox(e.Box, b.Dx(), b.Dy()); err != nil {
		return nil, nil, fmt.Errorf("detect: --exemplar %s (%dx%d): %w", e.Path, b.Dx(), b.Dy(), err)
	}
	return data, img.Image, nil
}

func readExemplarImage(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("detect: --exemplar: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, request.MaxExemplarImageBytes+1))
	if err != nil {
		return nil, fmt.Errorf("detect: --exemplar %s: %w", path, err)
	}
	if len(data) > request.MaxExemplarImageBytes {
		return nil, fmt.Errorf("detect: --exemplar %s: an example image is at most %d bytes", path, request.MaxExemplarImageBytes)
	}
	return data, nil
}

// embedExemplars embeds the --exemplar crops with the model's image encoder
// (decoded within the server's image limits, as the server decodes them).
func embedExemplars(ctx context.Context, emb vocabulary.Embedder, args []exemplarArg) ([]vocabulary.ExemplarCategory, error) {
	enc, ok := emb.(vocabulary.ExemplarEmbedder)
	if !ok {
		return nil, fmt.Errorf("detect: --exemplar: %w", vocabulary.ErrExemplarsUnsupported)
	}
	labels, groups, err := groupByLabel(args, func(e exemplarArg) ([]float32, error) {
		_, img, err := decodeExemplar(e)
		if err != nil {
			return nil, err
		}
		v, err := enc.EmbedExemplars(ctx, img, [][4]float32{e.Box})
		if err != nil {
			return nil, fmt.Errorf("detect: --exemplar %s: %w", e.Path, err)
		}
		return v[0], nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]vocabulary.ExemplarCategory, len(labels))
	for i, l := range labels {
		out[i] = vocabulary.ExemplarCategory{Label: l, Embeddings: groups[i]}
	}
	return out, nil
}

// batch is one `vild detect` over its inputs.
type batch struct {
	cfg    detectConfig
	inputs []batchInput
	det    imageDetector
	fp     runFingerprint
	stderr io.Writer
}

func (b batch) progress(resumed int) *progress {
	w := b.stderr
	if !b.cfg.Progress || len(b.inputs) < 2 {
		w = io.Discard
	}
	p := &progress{W: w, Terminal: isTerminal(w), Total: len(b.inputs), Resumed: resumed}
	p.begin()
	return p
}

// toStdout prints one JSON line per image in input order (and with an image
// --out, draws the detections on it). A file that fails is reported and
// counted; the run goes on.
func (b batch) toStdout(ctx context.Context, stdout io.Writer) error {
	enc := json.NewEncoder(stdout)
	prog := b.progress(0)
	failed := 0
	err := batchRun{Inputs: b.inputs, Detector: b.det, Workers: b.cfg.Workers, Ordered: func(o imageOutcome) error {
		if o.Err != nil {
			failed++
			prog.note("detect: %s: %v", o.Input.Path, o.Err)
		}
		prog.add(o.Err != nil)
		if o.Err != nil {
			return nil
		}
		out := detectResult{File: o.Input.Path, Model: b.fp.Model, VocabularyDigest: b.fp.VocabularyDigest,
			Image: api.ImageSize{Width: o.Result.Width, Height: o.Result.Height}, Detections: o.Result.Detections,
			Milliseconds: o.Millis}
		if out.Detections == nil {
			out.Detections = []detector.Detection{}
		}
		if err := enc.Encode(out); err != nil {
			return err
		}
		if b.cfg.Format == outImage {
			return drawDetections(o.Input.Path, b.cfg.Out, o.Result.Detections)
		}
		return nil
	}}.run(ctx)
	prog.end()
	if errors.Is(err, errInterrupted) {
		return fmt.Errorf("detect: %w after %d of %d images", err, prog.done, len(b.inputs))
	}
	if err != nil {
		return err
	}
	return failedError(failed, len(b.inputs))
}

// toFile runs the images a journal does not hold yet, appending each to it,
// then writes --out (and the dataset) from the journal in input order. The
// journal is removed when every image is done; with failed images it stays,
// so that rerunning the command retries only those.
func (b batch) toFile(ctx context.Context) error {
	start := time.Now()
	jpath := b.cfg.Out + ".journal"
	j, err := openJournal(jpath, b.fp)
	if err != nil {
		return err
	}
	defer j.close()
	var todo []batchInput
	for _, in := range b.inputs {
		if !j.has(in.FileName) {
			todo = append(todo, in)
		}
	}
	prog := b.progress(len(b.inputs) - len(todo))
	failed := 0
	err = batchRun{Inputs: todo, Detector: b.det, Workers: b.cfg.Workers, Completed: func(o imageOutcome) error {
		if o.Err != nil {
			failed++
			prog.note("detect: %s: %v", o.Input.Path, o.Err)
		}
		prog.add(o.Err != nil)
		if o.Err != nil {
			return nil
		}
		return j.add(journalRecord{FileName: o.Input.FileName, Width: o.Result.Width, Height: o.Result.Height, Detections: o.Result.Detections})
	}}.run(ctx)
	prog.end()
	if errors.Is(err, errInterrupted) {
		return fmt.Errorf("detect: %w after %d of %d images; run the same command again to resume from %s",
			errInterrupted, len(b.inputs)-len(todo)+prog.done-failed, len(b.inputs), jpath)
	}
	if err != nil {
		return err
	}
	images := finished(b.inputs, j)
	var n int
	written := b.cfg.Out
	if b.cfg.Format == formatCOCO {
		n, err = writeCOCO(b.cfg.Out, b.cfg.Dataset, j, images, b.fp)
		written += " and " + b.cfg.Dataset
	} else {
		n, err = writeJSONL(b.cfg.Out, j, images, b.fp)
	}
	if err == nil {
		err = j.close()
	}
	if err != nil {
		return err
	}
	if failed == 0 {
		if err := os.Remove(jpath); err != nil {
			return fmt.Errorf("detect: %w", err)
		}
	}
	fmt.Fprintf(b.stderr, "detect: %d of %d images (%d resumed), %d failed, %d detections in %.1f s; wrote %s\n",
		len(images), len(b.inputs), prog.Resumed, failed, n, time.Since(start).Seconds(), written)
	if failed > 0 {
		fmt.Fprintf(b.stderr, "detect: %s keeps the finished images; run the same command again to retry the failed ones\n", jpath)
	}
	return failedError(failed, len(b.inputs))
}

func failedError(failed, total int) error {
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("detect: %d of %d images failed", failed, total)
}

// drawDetections writes the picture at path with dets drawn on it to out.
func drawDetections(path, out string, dets []detector.Detection) error {
	data, err := readImageFile(path)
	if err != nil {
		return fmt.Errorf("detect: %w", err)
	}
	img, err := imageio.Decode(data, imageio.DefaultLimits)
	if err != nil {
		return fmt.Errorf("detect: %s: %w", path, err)
	}
	if err := writeAnnotated(out, annotate.Draw(img.Image, dets)); err != nil {
		return fmt.Errorf("detect: %w", err)
	}
	return nil
}

func dedupe(names []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		k := strings.ToLower(n)
		if !seen[k] {
			seen[k] = true
			out = append(out, n)
		}
	}
	return out
}

func writeAnnotated(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jpg", ".jpeg":
		err = jpeg.Encode(f, img, &jpeg.Options{Quality: 90})
	case ".png":
		err = png.Encode(f, img)
	default:
		err = fmt.Errorf("--out %s: use a .png or .jpg name", path)
	}
	return errors.Join(err, f.Close())
}
