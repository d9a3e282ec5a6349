package request

import (
	"encoding/json"
	"errors"
	"net/url"
	"testing"

	"github.com/vild/vild/api"
	"github.com/vild/vild/detector"
)

// "scores" goes from JSON or a query string into the detector's options; the
// model's default applies when it is absent; a bad value is a 400 and stable
// scores of a model without a category list a 422.
func TestResolveScores(t *testing.T) {
	stable := &Options{Defaults: detector.Options{Scores: detector.ScoresStable, MaxDetections: 100},
		Caps: Caps{MaxDetections: 300, MaxRunnersUp: 5, MaxLabelsPerBox: 20, StableScores: true}}
	softmaxOnly := &Options{Defaults: detector.Options{Scores: detector.ScoresSoftmax, MaxDetections: 100},
		Caps: Caps{MaxDetections: 300, MaxRunnersUp: 5, MaxLabelsPerBox: 20}}
	for _, tc := range []struct {
		opts   *Options
		body   string
		want   detector.Scores
		status int
	}{
		{stable, `{}`, detector.ScoresStable, 0},
		{stable, `{"scores": "softmax"}`, detector.ScoresSoftmax, 0},
		{stable, `{"scores": "stable"}`, detector.ScoresStable, 0},
		{stable, `{"scores": "calibrated"}`, "", 400},
		{stable, `{"scores": "Stable"}`, "", 400},
		{softmaxOnly, `{}`, detector.ScoresSoftmax, 0},
		{softmaxOnly, `{"scores": "softmax"}`, detector.ScoresSoftmax, 0},
		{softmaxOnly, `{"scores": "stable"}`, "", 422},
	} {
		var req api.DetectOptions
		if err := json.Unmarshal([]byte(tc.body), &req); err != nil {
			t.Fatal(err)
		}
		got, err := tc.opts.Resolve(req)
		var e *api.Error
		switch {
		case tc.status != 0 && (!errors.As(err, &e) || e.Status != tc.status):
			t.Fatalf("%s: %v, want status %d", tc.body, err, tc.status)
		case tc.status == 0 && (err != nil || got.Scores != tc.want):
			t.Fatalf("%s: %q %v, want %q", tc.body, got.Scores, err, tc.want)
		}
	}
	o, err := OptionsFromValues(url.Values{"categories": {"cat"}, "scores": {"softmax"}}, nil)
	if err != nil || o.Scores != "softmax" {
		t.Fatalf("query scores: %+v %v", o, err)
	}
	if _, err := OptionsFromValues(url.Values{"scores": {"softmax", "stable"}}, nil); err == nil {
		t.Fatal("scores given twice accepted")
	}
}
