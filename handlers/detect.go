package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"math"
	"net/http"
	"time"

	"github.com/vild/vild/detector"
)

// ImageSize is an image's size in pixels.
type ImageSize struct {
	Width  int `json:"width" example:"640"`
	Height int `json:"height" example:"480"`
}

// Timings are per-stage wall times in milliseconds.
type Timings struct {
	Queue      float64 `json:"queue"`
	Decode     float64 `json:"decode"`
	Preprocess float64 `json:"preprocess"`
	Backbone   float64 `json:"backbone"`
	Proposals  float64 `json:"proposals"`
	RoIAlign   float64 `json:"roi_align"`
	BoxHead    float64 `json:"box_head"`
	Scoring    float64 `json:"scoring"`
	Total      float64 `json:"total"`
}

// ImageResult is the outcome for one image of a batch: detections or a problem.
type ImageResult struct {
	Image      *ImageSize           `json:"image,omitempty"`
	Detections []detector.Detection `json:"detections"`
	TimingsMS  *Timings             `json:"timings_ms,omitempty"`
	Error      *Problem             `json:"error,omitempty"`
}

// DetectResponse answers POST /v1/detect. A single image fills image,
// detections and timings_ms; a batch (images) fills results, one per image.
type DetectResponse struct {
	Model            string               `json:"model" example:"pictogram-vild-small@3f2a9c1b"`
	VocabularyDigest string               `json:"vocabulary_digest" example:"sha256:9b1c..."`
	Image            *ImageSize           `json:"image,omitempty"`
	Detections       []detector.Detection `json:"detections,omitempty"`
	TimingsMS        *Timings             `json:"timings_ms,omitempty"`
	Results          []ImageResult        `json:"results,omitempty"`
}

// detectorOptions validates request options against the model's defaults and the server's caps.
func (h *api) detectorOptions(o DetectOptions) (detector.Options, error) {
	d := h.deps.Model.Defaults
	opts := detector.Options{Head: detector.HeadEnsemble, ScoreThreshold: d.ScoreThreshold,
		NMSIoU: d.NMSIoU, MaxDetections: d.MaxDetections, RunnersUp: 3, LabelsPerBox: max(d.LabelsPerBox, 1)}
	if d.Head != "" {
		opts.Head = d.Head
	}
	if opts.NMSIoU == 0 {
		opts.NMSIoU = 0.5
	}
	switch detector.Head(o.Head) {
	case "":
	case detector.HeadEnsemble, detector.HeadText, detector.HeadImage:
		opts.Head = detector.Head(o.Head)
	default:
		return opts, badRequest("invalid-option", "head must be ensemble, text or image", nil)
	}
	if o.ScoreThreshold != nil {
		if t := *o.ScoreThreshold; !(t >= 0 && t <= 1) {
			return opts, badRequest("invalid-option", "score_threshold must be in [0, 1]", nil)
		}
		opts.ScoreThreshold = *o.ScoreThreshold
	}
	if o.NMSIoU != nil {
		if t := *o.NMSIoU; !(t > 0 && t <= 1) {
			return opts, badRequest("invalid-option", "nms_iou must be in (0, 1]", nil)
		}
		opts.NMSIoU = *o.NMSIoU
	}
	if o.MaxDetections != nil {
		if *o.MaxDetections < 1 {
			return opts, badRequest("invalid-option", "max_detections must be at least 1", nil)
		}
		opts.MaxDetections = *o.MaxDetections
	}
	if opts.MaxDetections <= 0 || opts.MaxDetections > h.cfg.MaxDetections {
		opts.MaxDetections = h.cfg.MaxDetections
	}
	if o.RunnersUp != nil {
		if *o.RunnersUp < 0 || *o.RunnersUp > h.cfg.MaxRunnersUp {
			return opts, badRequest("invalid-option", fmt.Sprintf("runners_up must be 0 to %d", h.cfg.MaxRunnersUp), nil)
		}
		opts.RunnersUp = *o.RunnersUp
	}
	if o.LabelsPerBox != nil {
		if *o.LabelsPerBox < 1 || *o.LabelsPerBox > h.cfg.MaxLabelsPerBox {
			return opts, badRequest("invalid-option", fmt.Sprintf("labels_per_box must be 1 to %d", h.cfg.MaxLabelsPerBox), nil)
		}
		opts.LabelsPerBox = *o.LabelsPerBox
	}
	opts.LabelsPerBox = min(opts.LabelsPerBox, h.cfg.MaxLabelsPerBox)
	return opts, nil
}

// outcome is one image's result with the decoded picture (for annotation).
type outcome struct {
	img     image.Image
	result  *detector.Result
	stages  detector.Timings // the detector's, from Regions and Score
	timings Timings
}

// runImage decodes, proposes and scores one image on a worker.
func (h *api) runImage(ctx context.Context, data []byte, vocab *detector.Vocabulary, opts detector.Options) (*outcome, error) {
	start := time.Now()
	out := &outcome{}
	queued, err := h.queue.do(ctx, func(ctx context.Context) error {
		t := time.Now()
		img, err := h.decode(ctx, data)
		if err != nil {
			return err
		}
		out.img = img
		out.timings.Decode = since(t)
		h.metrics.stage("decode", time.Since(t))
		regions, err := h.regions(ctx, img)
		if err != nil {
			return err
		}
		res, err := h.score(ctx, regions, vocab, opts)
		if err != nil {
			return err
		}
		out.result = res
		out.stages = regions.Timings
		out.stages.Scoring = res.Timings.Scoring
		return nil
	})
	out.timings.Queue = ms(queued)
	if err != nil {
		return nil, err
	}
	out.timings.addStages(out.stages)
	out.timings.Total = since(start)
	return out, nil
}

// decode decodes an untrusted image. A panic in the decoder is the image's
// fault as far as the client can tell: it becomes 400 corrupt-image (the cause
// goes to the log) and the worker carries on.
func (h *api) decode(ctx context.Context, data []byte) (img image.Image, err error) {
	defer func() {
		if v := recover(); v != nil {
			img, err = nil, badRequest("corrupt-image", "the image could not be decoded", fmt.Errorf("decoder panic: %v", v))
		}
	}()
	return h.deps.Decoder.Decode(ctx, data)
}

// regions runs the vocabulary-independent stages and records their latencies.
func (h *api) regions(ctx context.Context, img image.Image) (*detector.Regions, error) {
	regions, err := h.deps.Detector.Regions(ctx, img)
	if err != nil {
		return nil, err
	}
	t := regions.Timings
	for _, s := range []struct {
		name string
		d    time.Duration
	}{{"preprocess", t.Preprocess}, {"backbone", t.Backbone}, {"proposals", t.Proposals},
		{"roi_align", t.RoIAlign}, {"box_head", t.BoxHead}} {
		if s.d > 0 {
			h.metrics.stage(s.name, s.d)
		}
	}
	return regions, nil
}

// score runs the vocabulary-dependent stage and applies the output cap. Only
// the scoring latency is recorded: a detector's Result may carry the timings
// of the Regions it scored (the pipeline's does), which ran once, earlier.
func (h *api) score(ctx context.Context, regions *detector.Regions, vocab *detector.Vocabulary, opts detector.Options) (*detector.Result, error) {
	res, err := h.deps.Detector.Score(ctx, regions, vocab, opts)
	if err != nil {
		return nil, err
	}
	res.Detections = capDetections(res.Detections, res.Width, res.Height, opts.MaxDetections)
	if res.Timings.Scoring > 0 {
		h.metrics.stage("scoring", res.Timings.Scoring)
	}
	return res, nil
}

func (t *Timings) addStages(s detector.Timings) {
	t.Preprocess, t.Backbone, t.Proposals = ms(s.Preprocess), ms(s.Backbone), ms(s.Proposals)
	t.RoIAlign, t.BoxHead, t.Scoring = ms(s.RoIAlign), ms(s.BoxHead), ms(s.Scoring)
}

// capDetections enforces the output cap and clips boxes to the image, whatever
// the detector returned; non-finite boxes and scores are dropped.
func capDetections(ds []detector.Detection, w, hgt, max int) []detector.Detection {
	out := make([]detector.Detection, 0, min(len(ds), max))
	for _, d := range ds {
		if len(out) == max {
			break
		}
		ok := !math.IsNaN(float64(d.Score)) && !math.IsInf(float64(d.Score), 0)
		for i := range d.Box {
			v := float64(d.Box[i])
			if math.IsNaN(v) || math.IsInf(v, 0) {
				ok = false
			}
			lim := float32(w)
			if i%2 == 1 {
				lim = float32(hgt)
			}
			d.Box[i] = min(max32(d.Box[i], 0), lim)
		}
		if ok {
			out = append(out, d)
		}
	}
	return out
}

func max32(a, b float32) float32 {
	if a > b {
		return a
	}
	return b
}

// detect godoc
//
//	@Summary		Detect objects of any categories in an image
//	@Description	The image comes as JSON (base64 in image, or a batch in images), as multipart/form-data (field image = the file; fields categories, vocabulary, negatives, score_threshold, max_detections, nms_iou, head, runners_up, labels_per_box; field options = a JSON object of DetectOptions) or as a raw image body with the options in the query string.
//	@Description	With Accept: image/png or image/jpeg the answer is the picture with boxes and labels drawn (single image only).
//	@Tags			detect
//	@Accept			json
//	@Accept			mpfd
//	@Accept			png
//	@Accept			jpeg
//	@Produce		json
//	@Produce		png
//	@Produce		jpeg
//	@Param			request			body		DetectRequest	true	"image(s) and options"
//	@Param			categories		query		string			false	"raw body: comma-separated categories"
//	@Param			vocabulary		query		string			false	"raw body: a stored vocabulary"
//	@Param			negatives		query		string			false	"raw body: comma-separated negatives"
//	@Param			score_threshold	query		number			false	"raw body: minimum score"
//	@Param			max_detections	query		integer			false	"raw body: maximum detections"
//	@Param			nms_iou			query		number			false	"raw body: NMS IoU"
//	@Param			head			query		string			false	"raw body: ensemble, text or image"
//	@Param			runners_up		query		integer			false	"raw body: runner-up labels per detection"
//	@Param			labels_per_box	query		integer			false	"raw body: labels one region may be reported with"
//	@Success		200				{object}	DetectResponse
//	@Failure		400				{object}	Problem	"bad request: invalid JSON, multipart, options or categories; corrupt image"
//	@Failure		404				{object}	Problem	"vocabulary not found"
//	@Failure		406				{object}	Problem	"annotated image asked for a batch"
//	@Failure		413				{object}	Problem	"body too large"
//	@Failure		415				{object}	Problem	"unsupported content type or image format"
//	@Failure		422				{object}	Problem	"image dimensions over the limits"
//	@Failure		503				{object}	Problem	"queue full or draining; see Retry-After"
//	@Failure		504				{object}	Problem	"request deadline exceeded"
//	@Router			/v1/detect [post]
func (h *api) detect(w http.ResponseWriter, r *http.Request) error {
	if h.deps.Health.draining.Load() {
		return errDraining
	}
	ctx := r.Context()
	want, err := negotiate(r)
	if err != nil {
		return err
	}
	in, err := h.readImageInput(w, r, true)
	if err != nil {
		return err
	}
	if want != "application/json" && in.batch {
		return errorf(http.StatusNotAcceptable, "not-acceptable", "an annotated image answers a single image, not a batch")
	}
	opts, err := h.detectorOptions(in.opts)
	if err != nil {
		return err
	}
	vocab, err := h.resolveVocabulary(ctx, in.opts)
	if err != nil {
		return err
	}
	resp := DetectResponse{Model: h.deps.Model.ID, VocabularyDigest: vocab.Digest}
	if !in.batch {
		out, err := h.runImage(ctx, in.images[0], vocab, opts)
		if err != nil {
			return err
		}
		if want != "application/json" {
			return h.writeAnnotated(w, want, out)
		}
		resp.Image = &ImageSize{out.result.Width, out.result.Height}
		resp.Detections = nonNil(out.result.Detections)
		resp.TimingsMS = &out.timings
		return writeJSON(w, http.StatusOK, resp)
	}
	resp.Results = make([]ImageResult, len(in.images))
	for i, data := range in.images {
		out, err := h.runImage(ctx, data, vocab, opts)
		if err != nil {
			e := h.toError(err)
			if e.Status >= 500 || e.Status == 499 {
				return err // the server, not the image, failed: fail the request
			}
			h.log.Info("batch image failed", "index", i, "status", e.Status, "problem", e.Slug, "cause", err)
			p := problemOf(r, e)
			resp.Results[i] = ImageResult{Detections: []detector.Detection{}, Error: &p}
			continue
		}
		resp.Results[i] = ImageResult{Image: &ImageSize{out.result.Width, out.result.Height},
			Detections: nonNil(out.result.Detections), TimingsMS: &out.timings}
	}
	return writeJSON(w, http.StatusOK, resp)
}

func nonNil(ds []detector.Detection) []detector.Detection {
	if ds == nil {
		return []detector.Detection{}
	}
	return ds
}

// negotiate picks JSON, PNG or JPEG from the Accept header.
func negotiate(r *http.Request) (string, error) {
	accept := r.Header.Get("Accept")
	if accept == "" {
		return "application/json", nil
	}
	best, bestQ := "", -1.0
	for _, cand := range []string{"application/json", "image/png", "image/jpeg"} {
		if q := acceptQ(accept, cand); q > bestQ {
			best, bestQ = cand, q
		}
	}
	if bestQ <= 0 {
		return "", errorf(http.StatusNotAcceptable, "not-acceptable", "this route answers application/json, image/png or image/jpeg")
	}
	return best, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("handlers: encode response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(append(b, '\n'))
	if err != nil {
		return errors.Join(errWritten, err)
	}
	return nil
}

// errWritten marks failures after the status line went out; nothing more can be sent.
var errWritten = errors.New("handlers: response already written")
