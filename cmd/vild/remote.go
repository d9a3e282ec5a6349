package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"

	"github.com/vild/vild/api"
	"github.com/vild/vild/client"
	"github.com/vild/vild/detector"
)

// remoteDetector detects through a vild server's POST /v1/detect (package
// client: API key, retries on 503 that honour Retry-After) instead of a model
// in this process: `vild detect --server URL`.
type remoteDetector struct {
	client *client.Client
	opts   api.DetectOptions
	// model and digest are the probe's answer: every image's must be the
	// same, or the run stops (errRunChanged).
	model, digest string
}

func (r remoteDetector) Detect(ctx context.Context, name string, data []byte) (*imageResult, error) {
	resp, err := detectRemoteImage(ctx, r.client, data, r.opts)
	if err != nil {
		return nil, err
	}
	if resp.Model != r.model || resp.VocabularyDigest != r.digest {
		return nil, fmt.Errorf("%w: the server answered with model %s and vocabulary %s, the run started with %s and %s "+
			"(upgraded while it ran?); the images finished before are kept (with --out, in its journal, which the new model cannot resume: delete it to start over)",
			errRunChanged, resp.Model, resp.VocabularyDigest, r.model, r.digest)
	}
	out := &imageResult{Detections: resp.Detections}
	if resp.Image != nil {
		out.Width, out.Height = resp.Image.Width, resp.Image.Height
	}
	return out, nil
}

// detectRemoteImage detects in one image: as multipart, or, when the options carry
// exemplar images (more than a multipart options field holds), as JSON, a
// batch of one whose result is returned as a single image's answer.
func detectRemoteImage(ctx context.Context, c *client.Client, data []byte, opts api.DetectOptions) (*api.DetectResponse, error) {
	if len(opts.Exemplars) == 0 {
		return c.Detect(ctx, data, opts)
	}
	resp, err := c.DetectBatch(ctx, [][]byte{data}, opts)
	if err != nil {
		return nil, err
	}
	if len(resp.Results) != 1 {
		return nil, fmt.Errorf("the server answered %d results for one image", len(resp.Results))
	}
	res := resp.Results[0]
	if res.Error != nil {
		return nil, &client.Error{Problem: *res.Error, Method: "POST", Path: "/v1/detect"}
	}
	return &api.DetectResponse{Model: resp.Model, VocabularyDigest: resp.VocabularyDigest, Image: res.Image,
		Detections: res.Detections, TimingsMS: res.TimingsMS}, nil
}

// detectRemote runs `vild detect` against the server at cfg.Server: the
// model and its default vocabulary come from GET /v1/models, every image goes
// to POST /v1/detect with the options given on the command line (those not
// given are the server's defaults).
func detectRemote(ctx context.Context, cfg detectConfig, inputs []batchInput, stdout, stderr io.Writer) error {
	if cfg.Format == outImage && len(inputs) != 1 {
		return fmt.Errorf("detect: --out %s takes one image, not %d; use --out results.json for many", cfg.Out, len(inputs))
	}
	opts := []client.Option{client.WithUserAgent("vild-detect")}
	if cfg.APIKey != "" {
		opts = append(opts, client.WithAPIKey(cfg.APIKey))
	}
	c, err := client.New(cfg.Server, opts...)
	if err != nil {
		return fmt.Errorf("detect: --server: %w", err)
	}
	list, err := c.Models(ctx)
	if err != nil {
		return fmt.Errorf("detect: %s: %w", cfg.Server, err)
	}
	if len(list.Models) == 0 {
		return fmt.Errorf("detect: %s serves no model", cfg.Server)
	}
	info := list.Models[0]
	names := cfg.Categories
	if len(names) == 0 && len(cfg.Exemplars) == 0 {
		for _, cat := range info.CategoryList {
			names = append(names, cat.Name)
		}
	}
	if len(names) == 0 && len(cfg.Exemplars) == 0 {
		return errors.New("detect: give --categories (the server's model has no default vocabulary)")
	}
	names = dedupe(names)
	req := api.DetectOptions{Categories: names, Head: cfg.Head, RunnersUp: ptr(3), Masks: string(cfg.Masks), Scores: string(cfg.Scores)}
	if len(cfg.Exemplars) > 0 { // sent with every image; the server embeds them
		if req.Exemplars, err = readExemplars(cfg.Exemplars); err != nil {
			return err
		}
	}
	fp := runFingerprint{Model: info.ID, Categories: withExampleLabels(names, cfg.Exemplars), Head: detector.Head(cfg.Head), RunnersUp: 3,
		ScoreThreshold: -1, Masks: cfg.Masks, Scores: cfg.Scores}
	if cfg.ScoreThreshold >= 0 {
		req.ScoreThreshold = ptr(float32(cfg.ScoreThreshold))
		fp.ScoreThreshold = float32(cfg.ScoreThreshold)
	}
	if cfg.MaxDetections > 0 {
		req.MaxDetections, fp.MaxDetections = ptr(cfg.MaxDetections), cfg.MaxDetections
	}
	if cfg.LabelsPerBox > 0 {
		req.LabelsPerBox, fp.LabelsPerBox = ptr(cfg.LabelsPerBox), cfg.LabelsPerBox
	}
	// One small image first: the server checks the options and names the
	// vocabulary's digest (recorded with the run) before the folder starts.
	probe, err := detectRemoteImage(ctx, c, probeImage(), req)
	if err != nil {
		return fmt.Errorf("detect: %s: %w", cfg.Server, err)
	}
	if probe.Model != info.ID {
		return fmt.Errorf("detect: %s: %w: GET /v1/models named %s, the first detection %s", cfg.Server, errRunChanged, info.ID, probe.Model)
	}
	fp.VocabularyDigest = probe.VocabularyDigest
	b := batch{cfg: cfg, inputs: inputs, fp: fp, stderr: stderr,
		det: remoteDetector{client: c, opts: req, model: probe.Model, digest: probe.VocabularyDigest}}
	if cfg.Format == formatCOCO || cfg.Format == formatJSONL {
		return b.toFile(ctx)
	}
	return b.toStdout(ctx, stdout)
}

func ptr[T any](v T) *T { return &v }

// probeImage is an 8x8 grey PNG.
func probeImage() []byte {
	var buf bytes.Buffer
	img := image.NewGray(image.Rect(0, 0, 8, 8))
	for i := range img.Pix {
		img.Pix[i] = 128
	}
	_ = png.Encode(&buf, img) // writing to memory does not fail
	return buf.Bytes()
}
