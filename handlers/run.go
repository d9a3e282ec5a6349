package handlers

import (
	"context"
	"fmt"
	"image"
	"math"
	"time"

	"github.com/vild/vild/admission"
	"github.com/vild/vild/api"
	"github.com/vild/vild/detector"
)

// runner runs the detector on the admission queue's workers and records
// per-stage latencies; the detect and images resources share it.
type runner struct {
	detector detector.Detector
	decoder  Decoder
	queue    *admission.Queue
	metrics  *Metrics
}

// outcome is one image's result with the decoded picture (for annotation).
type outcome struct {
	img     image.Image
	result  *detector.Result
	timings api.Timings
}

// detect decodes, proposes and scores one image on a worker.
func (rn *runner) detect(ctx context.Context, data []byte, vocab *detector.Vocabulary, opts detector.Options) (*outcome, error) {
	start := time.Now()
	out := &outcome{}
	var stages detector.Timings // the detector's, from Regions and Score
	queued, err := rn.queue.Do(ctx, func(ctx context.Context) error {
		img, regions, err := rn.decodeRegions(ctx, data, &out.timings)
		if err != nil {
			return err
		}
		out.img = img
		res, err := rn.score(ctx, regions, vocab, opts)
		if err != nil {
			return err
		}
		out.result = res
		stages = regions.Timings
		stages.Scoring = res.Timings.Scoring
		return nil
	})
	out.timings.Queue = ms(queued)
	if err != nil {
		return nil, err
	}
	addStages(&out.timings, stages)
	out.timings.Total = since(start)
	return out, nil
}

// register decodes one image and runs the vocabulary-independent stages on a
// worker, for an image session.
func (rn *runner) register(ctx context.Context, data []byte) (*detector.Regions, api.Timings, error) {
	start := time.Now()
	var regions *detector.Regions
	var tm api.Timings
	queued, err := rn.queue.Do(ctx, func(ctx context.Context) error {
		var err error
		_, regions, err = rn.decodeRegions(ctx, data, &tm)
		return err
	})
	if err != nil {
		return nil, tm, err
	}
	tm.Queue = ms(queued)
	addStages(&tm, regions.Timings)
	tm.Scoring = 0
	tm.Total = since(start)
	return regions, tm, nil
}

// rescore scores a session's regions against a vocabulary on a worker.
func (rn *runner) rescore(ctx context.Context, regions *detector.Regions, vocab *detector.Vocabulary, opts detector.Options) (*detector.Result, api.Timings, error) {
	start := time.Now()
	var res *detector.Result
	queued, err := rn.queue.Do(ctx, func(ctx context.Context) error {
		var err error
		res, err = rn.score(ctx, regions, vocab, opts)
		return err
	})
	if err != nil {
		return nil, api.Timings{}, err
	}
	return res, api.Timings{Queue: ms(queued), Scoring: ms(res.Timings.Scoring), Total: since(start)}, nil
}

// decodeRegions decodes data and runs the vocabulary-independent stages,
// recording the decode time in tm.
func (rn *runner) decodeRegions(ctx context.Context, data []byte, tm *api.Timings) (image.Image, *detector.Regions, error) {
	t := time.Now()
	img, err := rn.decode(ctx, data)
	if err != nil {
		return nil, nil, err
	}
	tm.Decode = since(t)
	rn.metrics.stage("decode", time.Since(t))
	regions, err := rn.regions(ctx, img)
	if err != nil {
		return nil, nil, err
	}
	return img, regions, nil
}

// decode decodes an untrusted image. A panic in the decoder is the image's
// fault as far as the client can tell: it becomes 400 corrupt-image (the cause
// goes to the log) and the worker carries on.
func (rn *runner) decode(ctx context.Context, data []byte) (img image.Image, err error) {
	defer func() {
		if v := recover(); v != nil {
			img, err = nil, badRequest("corrupt-image", "the image could not be decoded", fmt.Errorf("decoder panic: %v", v))
		}
	}()
	return rn.decoder.Decode(ctx, data)
}

// regions runs the vocabulary-independent stages and records their latencies.
func (rn *runner) regions(ctx context.Context, img image.Image) (*detector.Regions, error) {
	regions, err := rn.detector.Regions(ctx, img)
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
			rn.metrics.stage(s.name, s.d)
		}
	}
	return regions, nil
}

// score runs the vocabulary-dependent stage and applies the output cap. Only
// the scoring latency is recorded: a detector's Result may carry the timings
// of the Regions it scored (the pipeline's does), which ran once, earlier.
func (rn *runner) score(ctx context.Context, regions *detector.Regions, vocab *detector.Vocabulary, opts detector.Options) (*detector.Result, error) {
	res, err := rn.detector.Score(ctx, regions, vocab, opts)
	if err != nil {
		return nil, err
	}
	res.Detections = capDetections(res.Detections, res.Width, res.Height, opts.MaxDetections)
	if res.Timings.Scoring > 0 {
		rn.metrics.stage("scoring", res.Timings.Scoring)
	}
	return res, nil
}

func addStages(t *api.Timings, s detector.Timings) {
	t.Preprocess, t.Backbone, t.Proposals = ms(s.Preprocess), ms(s.Backbone), ms(s.Proposals)
	t.RoIAlign, t.BoxHead, t.Scoring = ms(s.RoIAlign), ms(s.BoxHead), ms(s.Scoring)
}

// capDetections enforces the output cap and clips boxes to the image, whatever
// the detector returned; non-finite boxes and scores are dropped.
func capDetections(ds []detector.Detection, w, hgt, limit int) []detector.Detection {
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

// since returns milliseconds since t.
func since(t time.Time) float64 { return ms(time.Since(t)) }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
