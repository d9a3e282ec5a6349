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
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vild/vild/annotate"
	"github.com/vild/vild/api"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/vocabulary"
)

// detectConfig is what `vild detect` is told.
type detectConfig struct {
	Images         []string
	Categories     []string
	Out            string
	Model          modelConfig
	ScoreThreshold float64
	MaxDetections  int
	LabelsPerBox   int
	Head           string
}

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
	fs := flag.NewFlagSet("vild detect IMAGE...", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cats := fs.String("categories", "", `comma-separated category names, e.g. "dog,red umbrella"; empty: the model's vocabulary`)
	fs.StringVar(&c.Out, "out", "", "write the annotated image (PNG or JPEG by extension) to `FILE`; one image only")
	fs.Float64Var(&c.ScoreThreshold, "score-threshold", -1, "minimum score (default: the model's)")
	fs.IntVar(&c.MaxDetections, "max-detections", 0, "detections per image (default: the model's)")
	fs.IntVar(&c.LabelsPerBox, "labels-per-box", 0, "labels one region may be reported with, each a detection (default: the model's)")
	fs.StringVar(&c.Head, "head", "ensemble", "ensemble, text or image")
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
	if len(c.Images) == 0 {
		return c, errors.New(`detect: give at least one image: vild detect IMAGE... --categories "a,b,c"`)
	}
	if c.Out != "" && len(c.Images) != 1 {
		return c, errors.New("detect: --out takes one image")
	}
	for _, s := range strings.Split(*cats, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.Categories = append(c.Categories, s)
		}
	}
	switch detector.Head(c.Head) {
	case detector.HeadEnsemble, detector.HeadText, detector.HeadImage:
	default:
		return c, fmt.Errorf("detect: --head must be ensemble, text or image")
	}
	if c.LabelsPerBox < 0 {
		return c, fmt.Errorf("detect: --labels-per-box must not be negative")
	}
	return c, nil
}

func runDetect(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parseDetectConfig(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	m, err := loadModel(ctx, cfg.Model)
	if err != nil {
		return fmt.Errorf("detect: load model: %w", err)
	}
	defer m.Close()
	return detectFiles(ctx, cfg, m, stdout)
}

// detectFiles runs the model over each image and prints one JSON line each.
func detectFiles(ctx context.Context, cfg detectConfig, m *model, stdout io.Writer) error {
	names := cfg.Categories
	if len(names) == 0 {
		names = m.Info.Categories
	}
	if len(names) == 0 {
		return errors.New("detect: give --categories (the model has no default vocabulary)")
	}
	vocab, err := vocabulary.Build(ctx, m.Embedder, vocabulary.BaseNames(m.Info.BaseCategories),
		vocabulary.Spec{Categories: dedupe(names)})
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
	enc := json.NewEncoder(stdout)
	for _, file := range cfg.Images {
		start := time.Now()
		data, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("detect: %w", err)
		}
		img, err := imageio.Decode(data, imageio.DefaultLimits)
		if err != nil {
			return fmt.Errorf("detect: %s: %w", file, err)
		}
		r, err := m.Detector.Regions(ctx, img.Image)
		if err != nil {
			return fmt.Errorf("detect: %s: %w", file, err)
		}
		res, err := m.Detector.Score(ctx, r, vocab, opts)
		if err != nil {
			return fmt.Errorf("detect: %s: %w", file, err)
		}
		out := detectResult{File: file, Model: m.Info.ID, VocabularyDigest: vocab.Digest,
			Image: api.ImageSize{Width: res.Width, Height: res.Height}, Detections: res.Detections,
			Milliseconds: float64(time.Since(start).Microseconds()) / 1000}
		if out.Detections == nil {
			out.Detections = []detector.Detection{}
		}
		if err := enc.Encode(out); err != nil {
			return err
		}
		if cfg.Out != "" {
			if err := writeAnnotated(cfg.Out, annotate.Draw(img.Image, res.Detections)); err != nil {
				return fmt.Errorf("detect: %w", err)
			}
		}
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
