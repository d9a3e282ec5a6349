// Package inference runs the detector for the server: each image is decoded
// and run on one of the admission queue's workers, the detector's output is
// capped and clipped, and every stage's latency is observed. Detect runs the
// whole detector; Register runs its vocabulary-independent part for an image
// session and Rescore its vocabulary-dependent part.
package inference

import (
	"context"
	"fmt"
	"image"
	"math"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/vild/vild/admission"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/imageio"
)

// Decoder decodes an untrusted image (imageio.Decoder is the real one): format
// allowlist by magic bytes, dimensions checked before decoding, first frame
// only. Its errors wrap imageio's sentinels.
type Decoder interface {
	Decode(ctx context.Context, data []byte) (image.Image, error)
}

// DecoderFunc adapts a function to Decoder.
type DecoderFunc func(ctx context.Context, data []byte) (image.Image, error)

// Decode calls f.
func (f DecoderFunc) Decode(ctx context.Context, data []byte) (image.Image, error) {
	return f(ctx, data)
}

// Runner runs the detector on the queue's workers.
type Runner struct {
	Detector detector.Detector
	Decoder  Decoder
	Queue    *admission.Queue
	// Observe receives each stage's latency (queue, decode, preprocess,
	// backbone, proposals, roi_align, box_head, scoring, masks) with the request's
	// context; nil: not observed.
	Observe func(ctx context.Context, stage string, d time.Duration)
}

// span starts a stage span under ctx's, from otel's global provider (a no-op
// unless the command set one; looked up each time, so a provider set later
// takes effect). Stages inside the detector (preprocess … box_head) ran before
// their timings are known, so their spans are recorded afterwards with
// explicit timestamps, back to back from the start of the detector's call.
func span(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	return otel.Tracer("github.com/vild/vild/inference").Start(ctx, name, opts...)
}

// end ends sp, marking it failed when err is not nil.
func end(sp trace.Span, err error) {
	if err != nil {
		sp.SetStatus(codes.Error, "") // the error may hold input: not exported
	}
	sp.End()
}

// Timings are the wall times of one request: its wait for a worker, the
// decode, the detector's stages and the total.
type Timings struct {
	Queue, Decode, Total time.Duration
	detector.Timings
}

// Outcome is one image's result with the decoded picture (for annotation).
type Outcome struct {
	Image   image.Image
	Result  *detector.Result
	Timings Timings
}

// Detect decodes, proposes and scores one image on a worker; the result holds
// at most opts.MaxDetections detections, boxes clipped to the image.
func (rn *Runner) Detect(ctx context.Context, data []byte, vocab *detector.Vocabulary, opts detector.Options) (*Outcome, error) {
	start := time.Now()
	out := &Outcome{}
	ran := false
	queued, err := rn.Queue.Do(ctx, func(ctx context.Context) error {
		ran = true
		img, regions, err := rn.decodeRegions(ctx, data, &out.Timings)
		if err != nil {
			return err
		}
		out.Image = img
		res, err := rn.score(ctx, regions, vocab, opts)
		if err != nil {
			return err
		}
		out.Result = res
		out.Timings.Timings = regions.Timings
		out.Timings.Scoring = res.Timings.Scoring
		out.Timings.Masks = res.Timings.Masks
		return nil
	})
	out.Timings.Queue = queued
	rn.queued(ctx, ran, queued)
	if err != nil {
		return nil, err
	}
	out.Timings.Total = time.Since(start)
	return out, nil
}

// Register decodes one image and runs the vocabulary-independent stages on a
// worker, for an image session.
func (rn *Runner) Register(ctx context.Context, data []byte) (*detector.Regions, Timings, error) {
	start := time.Now()
	var regions *detector.Regions
	var tm Timings
	ran := false
	queued, err := rn.Queue.Do(ctx, func(ctx context.Context) error {
		ran = true
		var err error
		_, regions, err = rn.decodeRegions(ctx, data, &tm)
		return err
	})
	rn.queued(ctx, ran, queued)
	if err != nil {
		return nil, tm, err
	}
	tm.Queue = queued
	tm.Timings = regions.Timings
	tm.Scoring = 0
	tm.Total = time.Since(start)
	return regions, tm, nil
}

// Rescore scores a session's regions against a vocabulary on a worker.
func (rn *Runner) Rescore(ctx context.Context, regions *detector.Regions, vocab *detector.Vocabulary, opts detector.Options) (*detector.Result, Timings, error) {
	start := time.Now()
	var res *detector.Result
	ran := false
	queued, err := rn.Queue.Do(ctx, func(ctx context.Context) error {
		ran = true
		var err error
		res, err = rn.score(ctx, regions, vocab, opts)
		return err
	})
	rn.queued(ctx, ran, queued)
	if err != nil {
		return nil, Timings{}, err
	}
	tm := Timings{Queue: queued, Total: time.Since(start)}
	tm.Scoring = res.Timings.Scoring
	tm.Masks = res.Timings.Masks
	return res, tm, nil
}

func (rn *Runner) observe(ctx context.Context, stage string, d time.Duration) {
	if rn.Observe != nil {
		rn.Observe(ctx, stage, d)
	}
}

// queued observes the wait of a request that a worker took.
func (rn *Runner) queued(ctx context.Context, ran bool, d time.Duration) {
	if ran {
		rn.observe(ctx, "queue", d)
	}
}

// decodeRegions decodes data and runs the vocabulary-independent stages,
// recording the decode time in tm.
func (rn *Runner) decodeRegions(ctx context.Context, data []byte, tm *Timings) (image.Image, *detector.Regions, error) {
	t := time.Now()
	_, sp := span(ctx, "decode")
	img, err := rn.decode(ctx, data)
	end(sp, err)
	if err != nil {
		return nil, nil, err
	}
	tm.Decode = time.Since(t)
	rn.observe(ctx, "decode", tm.Decode)
	regions, err := rn.regions(ctx, img)
	if err != nil {
		return nil, nil, err
	}
	return img, regions, nil
}

// decode decodes an untrusted image. A panic in the decoder is the image's
// fault as far as the client can tell: it becomes imageio.ErrCorrupt and the
// worker carries on.
func (rn *Runner) decode(ctx context.Context, data []byte) (img image.Image, err error) {
	defer func() {
		if v := recover(); v != nil {
			img, err = nil, fmt.Errorf("%w: decoder panic: %v", imageio.ErrCorrupt, v)
		}
	}()
	return rn.Decoder.Decode(ctx, data)
}

// regions runs the vocabulary-independent stages and observes their latencies.
func (rn *Runner) regions(ctx context.Context, img image.Image) (*detector.Regions, error) {
	start := time.Now()
	regions, err := rn.Detector.Regions(ctx, img)
	if err != nil {
		_, sp := span(ctx, "regions")
		end(sp, err)
		return nil, err
	}
	t := regions.Timings
	for _, s := range []struct {
		name string
		d    time.Duration
	}{{"preprocess", t.Preprocess}, {"backbone", t.Backbone}, {"proposals", t.Proposals},
		{"roi_align", t.RoIAlign}, {"box_head", t.BoxHead}, {"crops", t.Crops}} {
		if s.d > 0 {
			rn.observe(ctx, s.name, s.d)
			if trace.SpanFromContext(ctx).IsRecording() {
				_, sp := span(ctx, s.name, trace.WithTimestamp(start))
				start = start.Add(s.d)
				sp.End(trace.WithTimestamp(start))
			}
		}
	}
	return regions, nil
}

// score runs the vocabulary-dependent stage and applies the output cap. Only
// the scoring latency is observed: a detector's Result may carry the timings
// of the Regions it scored (the pipeline's does), which ran once, earlier.
func (rn *Runner) score(ctx context.Context, regions *detector.Regions, vocab *detector.Vocabulary, opts detector.Options) (*detector.Result, error) {
	ctx, sp := span(ctx, "scoring")
	res, err := rn.Detector.Score(ctx, regions, vocab, opts)
	end(sp, err)
	if err != nil {
		return nil, err
	}
	res.Detections = CapDetections(res.Detections, res.Width, res.Height, opts.MaxDetections)
	if res.Timings.Scoring > 0 {
		rn.observe(ctx, "scoring", res.Timings.Scoring)
	}
	if res.Timings.Masks > 0 {
		rn.observe(ctx, "masks", res.Timings.Masks)
	}
	return res, nil
}

// CapDetections enforces the output cap and clips boxes to the image, whatever
// the detector returned; non-finite boxes and scores are dropped.
func CapDetections(ds []detector.Detection, w, hgt, limit int) []detector.Detection {
	out := make([]detector.Detection, 0, min(len(ds), limit))
	for _, d := range ds {
		if len(out) == limit {
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
			d.Box[i] = min(max(d.Box[i], 0), lim)
		}
		if ok {
			out = append(out, d)
		}
	}
	return out
}
