package main

import (
	"context"
	"errors"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"strings"

	"github.com/vild/vild/api"
	"github.com/vild/vild/bundle"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/exemplar"
	"github.com/vild/vild/handlers"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/models"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/pipeline"
	"github.com/vild/vild/textbank"
	"github.com/vild/vild/vocabulary"
)

// model is a loaded model: what the HTTP layer and `vild detect` need.
type model struct {
	Detector detector.Detector
	// Embedder embeds names, and exemplars too (vocabulary.ExemplarEmbedder)
	// when the bundle has an image encoder.
	Embedder vocabulary.Embedder
	// Exemplars is the bundle's image encoder; nil when it has none.
	Exemplars *exemplar.Encoder
	// CropViews are the views of a region the ensemble's teacher sees
	// (embedding.crops, pipeline.CropViews); zero when the bundle has none.
	CropViews exemplar.Views
	Info      api.Model
	// NameError is the embedder's sentinel for names it cannot encode.
	NameError error
	// Warmup runs one inference end to end.
	Warmup func(ctx context.Context) error
	Close  func() error
}

// loader loads a model; tests substitute a fake.
type loader func(ctx context.Context, cfg modelConfig) (*model, error)

// loadModel opens the bundle (a directory, or the embedded default), the ONNX
// Runtime, the detector pipeline and the text bank.
func loadModel(ctx context.Context, cfg modelConfig) (*model, error) {
	var b *bundle.Bundle
	var err error
	if cfg.ModelDir != "" {
		b, err = bundle.Open(cfg.ModelDir)
	} else {
		b, err = models.Default()
	}
	if err != nil {
		return nil, err
	}
	lib := cfg.ORTLib
	if lib == "" {
		lib = ort.DefaultLibraryPath()
	}
	rt, err := ort.Open(ort.Config{LibraryPath: lib, IntraOpThreads: cfg.IntraOpThreads})
	if errors.Is(err, ort.ErrLibraryMissing) {
		return nil, fmt.Errorf("%w (looked at %s): run `make serve` or `bash scripts/setup.d/30-onnxruntime.sh` to fetch it, or pass --ort-lib / VILD_ORT_LIB", err, lib)
	}
	if err != nil {
		return nil, err
	}
	p, err := pipeline.Open(b, rt, pipeline.Config{NoCrops: cfg.NoCrops})
	if err != nil {
		rt.Close()
		return nil, err
	}
	var cache string
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			p.Close()
			rt.Close()
			return nil, fmt.Errorf("data dir: %w", err)
		}
		cache = filepath.Join(cfg.DataDir, "textbank.db")
	}
	bank, err := textbank.Open(b, rt, textbank.Options{CachePath: cache, Store: cfg.Embeddings})
	if err != nil {
		p.Close()
		rt.Close()
		return nil, err
	}
	var enc *exemplar.Encoder
	var embedder vocabulary.Embedder = bank
	if b.Manifest.ImageEncoder != nil {
		if enc, err = exemplar.Open(b, rt); err != nil {
			bank.Close()
			p.Close()
			rt.Close()
			return nil, err
		}
		embedder = exemplarBank{Bank: bank, enc: enc}
	}
	info := modelInfo(b, p.DefaultOptions())
	warm := func(ctx context.Context) error {
		if err := p.Warmup(ctx); err != nil {
			return err
		}
		names := info.Categories
		if len(names) > 8 {
			names = names[:8]
		}
		if len(names) == 0 {
			names = []string{"object"}
		}
		vocab, err := vocabulary.Build(ctx, bank, vocabulary.BaseNames(info.BaseCategories), vocabulary.Spec{Categories: names})
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		img := image.NewGray(image.Rect(0, 0, 64, 48))
		r, err := p.Regions(ctx, img)
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		if _, err := p.Score(ctx, r, vocab, p.DefaultOptions()); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		return nil
	}
	return &model{
		Detector: p, Embedder: embedder, Exemplars: enc, CropViews: pipeline.CropViews(b.Manifest), Info: info,
		NameError: textbank.ErrName, Warmup: warm,
		Close: func() error {
			var encErr error
			if enc != nil {
				encErr = enc.Close()
			}
			return errors.Join(bank.Close(), encErr, p.Close(), rt.Close())
		},
	}, nil
}

// exemplarBank is the text bank with the bundle's image encoder: it embeds
// names (and their templates) and exemplars (vocabulary.ExemplarEmbedder).
type exemplarBank struct {
	*textbank.Bank
	enc *exemplar.Encoder
}

// EmbedExemplars embeds each box of img with the image encoder.
func (b exemplarBank) EmbedExemplars(ctx context.Context, img image.Image, boxes [][4]float32) ([][]float32, error) {
	return b.enc.Embed(ctx, img, boxes)
}

// modelInfo describes bundle b for GET /v1/models and the vocabulary
// builders: its categories with their split and synonyms, the default
// vocabulary (every category) and the names that mark a class base (the base
// categories and their synonyms).
func modelInfo(b *bundle.Bundle, defaults detector.Options) api.Model {
	m := b.Manifest
	info := api.Model{
		ID:           m.Name + "@" + shortDigest(b.Digest),
		Name:         m.Name,
		Digest:       b.Digest,
		EmbeddingDim: m.Embedding.Dim,
		Exemplars:    m.ImageEncoder != nil,
		Masks:        m.MaskHead != nil,
		Templates:    m.Text.Templates,
		Defaults:     defaults,
		Scores:       string(defaults.Scores),
	}
	cats := make([]api.ModelCategory, len(m.Categories))
	for i, c := range m.Categories {
		cats[i] = api.ModelCategory{Name: c.Name, Split: c.Split, Synonyms: c.Synonyms}
	}
	info.SetCategories(cats)
	return info
}

func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

// imageDecoder is imageio's decoder with the configured limits.
func imageDecoder(cfg handlers.Config) imageio.Decoder {
	return imageio.Decoder{Limits: imageio.Limits{MaxSide: cfg.MaxImageSide, MaxPixels: int64(cfg.MaxImagePixels)}}
}
