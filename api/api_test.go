package api

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/vild/vild/detector"
)

// A single image's answer always carries detections ([] when none); a batch
// answer never does, and each of its results carries its own.
func TestDetectResponseDetectionsField(t *testing.T) {
	one := []detector.Detection{{Label: "mug", Score: 0.9, Box: [4]float32{1, 2, 3, 4}}}
	for _, c := range []struct {
		name string
		resp DetectResponse
		want []string // substrings of the JSON
		not  []string
	}{
		{"single, none", DetectResponse{Model: "m", Image: &ImageSize{Width: 1, Height: 1}},
			[]string{`"detections":[]`}, []string{`"results"`, `null`}},
		{"single, empty", DetectResponse{Model: "m", Detections: []detector.Detection{}},
			[]string{`"detections":[]`}, []string{`"results"`}},
		{"single, one", DetectResponse{Model: "m", Detections: one},
			[]string{`"detections":[{"label":"mug"`}, []string{`"results"`}},
		{"batch", DetectResponse{Model: "m", Results: []ImageResult{{Detections: one}, {Error: &Problem{Status: 400}}}},
			[]string{`"results":[{"detections":[{"label":"mug"`, `{"detections":[],"error":{`}, []string{`"detections":null`, `"m","detections"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := json.Marshal(c.resp)
			if err != nil {
				t.Fatal(err)
			}
			s := string(b)
			for _, w := range c.want {
				if !strings.Contains(s, w) {
					t.Errorf("%s lacks %s", s, w)
				}
			}
			for _, w := range c.not {
				if strings.Contains(s, w) {
					t.Errorf("%s holds %s", s, w)
				}
			}
			if strings.Count(s, `"model"`) != 1 {
				t.Errorf("%s: model written %d times", s, strings.Count(s, `"model"`))
			}
			var back DetectResponse // it reads back into the same type
			if err := json.Unmarshal(b, &back); err != nil || back.Model != "m" || len(back.Results) != len(c.resp.Results) {
				t.Fatalf("read back %+v: %v", back, err)
			}
		})
	}
	var batch map[string]any
	b, _ := json.Marshal(DetectResponse{Results: []ImageResult{{}}})
	if err := json.Unmarshal(b, &batch); err != nil {
		t.Fatal(err)
	}
	if _, ok := batch["detections"]; ok {
		t.Fatalf("batch answer %s carries detections", b)
	}
}
