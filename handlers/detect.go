package handlers

import (
	"bytes"
	"context"
	"fmt"
	"image/jpeg"
	"image/png"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/vild/vild/annotate"
	"github.com/vild/vild/api"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/inference"
	"github.com/vild/vild/observe"
	"github.com/vild/vild/request"
)

// detectResource is POST /v1/detect.
type detectResource struct {
	p       *problems
	in      request.Reader
	run     *inference.Runner
	vocabs  *request.Vocabularies
	opts    *request.Options
	health  *Health
	model   string
	log     *slog.Logger
	metrics *Metrics
}

// Routes mounts the resource.
func (d detectResource) Routes() chi.Router {
	r := chi.NewRouter()
	r.Post("/", d.p.handle(d.detect))
	return r
}

// detect godoc
//
//	@Summary		Detect objects of any categories in an image
//	@Description	The image comes as JSON (base64 in image, or a batch in images), as multipart/form-data (field image = the file; fields categories, vocabulary, negatives, score_threshold, max_detections, nms_iou, head, runners_up, labels_per_box, masks; field options = a JSON object of DetectOptions) or as a raw image body with the options in the query string.
//	@Description	With Accept: image/png or image/jpeg the answer is the picture with boxes and labels drawn (single image only), and the masks when masks are asked. With masks = rle or polygon each detection carries its instance mask (models with a mask head).
//	@Tags			detect
//	@Accept			json
//	@Accept			mpfd
//	@Accept			png
//	@Accept			jpeg
//	@Produce		json
//	@Produce		png
//	@Produce		jpeg
//	@Param			request			body		api.DetectRequest	true	"image(s) and options"
//	@Param			categories		query		string				false	"raw body: comma-separated categories"
//	@Param			vocabulary		query		string				false	"raw body: a stored vocabulary"
//	@Param			negatives		query		string				false	"raw body: comma-separated negatives"
//	@Param			score_threshold	query		number				false	"raw body: minimum score"
//	@Param			max_detections	query		integer				false	"raw body: maximum detections"
//	@Param			nms_iou			query		number				false	"raw body: NMS IoU"
//	@Param			head			query		string				false	"raw body: ensemble, text or image"
//	@Param			runners_up		query		integer				false	"raw body: runner-up labels per detection"
//	@Param			labels_per_box	query		integer				false	"raw body: labels one region may be reported with"
//	@Param			masks			query		string				false	"raw body: instance masks, rle or polygon"
//	@Success		200				{object}	api.DetectResponse
//	@Failure		400				{object}	api.Problem	"bad request: invalid JSON, multipart, options or categories; corrupt image"
//	@Failure		404				{object}	api.Problem	"vocabulary not found"
//	@Failure		406				{object}	api.Problem	"annotated image asked for a batch"
//	@Failure		413				{object}	api.Problem	"body too large"
//	@Failure		415				{object}	api.Problem	"unsupported content type or image format"
//	@Failure		422				{object}	api.Problem	"image dimensions over the limits; masks-unsupported: masks asked of a model without a mask head"
//	@Failure		503				{object}	api.Problem	"queue full or draining; see Retry-After"
//	@Failure		504				{object}	api.Problem	"request deadline exceeded"
//	@Security	ApiKey
//	@Failure	401	{object}	api.Problem	"no API key, or one that is not valid (with --auth keys); see WWW-Authenticate"
//	@Failure	403	{object}	api.Problem	"the API key lacks this route's scope"
//	@Failure	429	{object}	api.Problem	"the API key's rate or concurrent inferences are used up; see Retry-After"
//	@Router			/v1/detect [post]
func (d detectResource) detect(w http.ResponseWriter, r *http.Request) error {
	if d.health.Draining() {
		return errDraining
	}
	ctx := r.Context()
	want, err := negotiate(r)
	if err != nil {
		return err
	}
	in, err := d.in.Image(w, r, true)
	if err != nil {
		return err
	}
	if want != "application/json" && in.Batch {
		return api.Errorf(http.StatusNotAcceptable, "not-acceptable", "an annotated image answers a single image, not a batch")
	}
	opts, err := d.opts.Resolve(in.Options)
	if err != nil {
		return err
	}
	vocab, err := d.vocabs.Resolve(ctx, in.Options)
	if err != nil {
		return err
	}
	observe.Vocabulary(ctx, vocab.Digest)
	resp := api.DetectResponse{Model: d.model, VocabularyDigest: vocab.Digest}
	if !in.Batch {
		out, err := d.run.Detect(ctx, in.Images[0], vocab, opts)
		if err != nil {
			return err
		}
		if want != "application/json" {
			return d.writeAnnotated(ctx, w, want, out)
		}
		resp.Image = &api.ImageSize{Width: out.Result.Width, Height: out.Result.Height}
		resp.Detections = nonNil(out.Result.Detections)
		resp.TimingsMS = apiTimings(out.Timings)
		return writeJSON(w, http.StatusOK, resp)
	}
	resp.Results = make([]api.ImageResult, len(in.Images))
	for i, data := range in.Images {
		out, err := d.run.Detect(ctx, data, vocab, opts)
		if err != nil {
			e := d.p.toError(err)
			if e.Status >= 500 || e.Status == 499 {
				return err // the server, not the image, failed: fail the request
			}
			d.log.Info("batch image failed", "index", i, "status", e.Status, "problem", e.Slug, "cause", err)
			p := problemOf(r, e)
			resp.Results[i] = api.ImageResult{Detections: []detector.Detection{}, Error: &p}
			continue
		}
		resp.Results[i] = api.ImageResult{Image: &api.ImageSize{Width: out.Result.Width, Height: out.Result.Height},
			Detections: nonNil(out.Result.Detections), TimingsMS: apiTimings(out.Timings)}
	}
	return writeJSON(w, http.StatusOK, resp)
}

// apiTimings is t in milliseconds.
func apiTimings(t inference.Timings) *api.Timings {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return &api.Timings{Queue: ms(t.Queue), Decode: ms(t.Decode), Preprocess: ms(t.Preprocess),
		Backbone: ms(t.Backbone), Proposals: ms(t.Proposals), RoIAlign: ms(t.RoIAlign), BoxHead: ms(t.BoxHead),
		Crops: ms(t.Crops), Scoring: ms(t.Scoring), Masks: ms(t.Masks), Total: ms(t.Total)}
}

func nonNil(ds []detector.Detection) []detector.Detection {
	if ds == nil {
		return []detector.Detection{}
	}
	return ds
}

// writeAnnotated encodes the annotated picture as PNG or JPEG.
func (d detectResource) writeAnnotated(ctx context.Context, w http.ResponseWriter, mediaType string, out *inference.Outcome) error {
	t := time.Now()
	img := annotate.Draw(out.Image, out.Result.Detections)
	var buf bytes.Buffer
	var err error
	if mediaType == "image/jpeg" {
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
	} else {
		err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, img)
	}
	if err != nil {
		return fmt.Errorf("handlers: encode annotated image: %w", err)
	}
	d.metrics.stage(ctx, "encode", time.Since(t))
	w.Header().Set("Content-Type", mediaType)
	w.Header().Set("X-Detections", strconv.Itoa(len(out.Result.Detections)))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("%w: %w", errWritten, err)
	}
	return nil
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
		return "", api.Errorf(http.StatusNotAcceptable, "not-acceptable", "this route answers application/json, image/png or image/jpeg")
	}
	return best, nil
}

// acceptQ is the quality an Accept header gives a media type (0: not acceptable).
func acceptQ(accept, mediaType string) float64 {
	typ, _, _ := strings.Cut(mediaType, "/")
	best, spec := 0.0, -1
	for _, part := range strings.Split(accept, ",") {
		fields := strings.Split(part, ";")
		mt := strings.ToLower(strings.TrimSpace(fields[0]))
		s := -1
		switch {
		case mt == mediaType:
			s = 2
		case mt == typ+"/*":
			s = 1
		case mt == "*/*":
			s = 0
		}
		if s < spec || s < 0 {
			continue
		}
		q := 1.0
		for _, p := range fields[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(k, "q") {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					q = f
				}
			}
		}
		if s > spec {
			best, spec = q, s
		}
	}
	return best
}
