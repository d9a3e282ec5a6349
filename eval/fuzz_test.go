package eval

import (
	"encoding/json"
	"math"
	"testing"
)

// FuzzParseCOCO: annotation files are user input. Whatever parses must
// evaluate without panicking, against itself and against the seeds'
// detections, with every AP in [0, 1] or NaN.
func FuzzParseCOCO(f *testing.F) {
	for i, c := range readGolden(f).Cases {
		if i == 0 || !testing.Short() {
			f.Add([]byte(c.COCO), []byte(c.Detections))
		}
	}
	f.Add([]byte(twoCats), []byte(`[{"image_id":1,"category_id":1,"bbox":[10,10,20,20],"score":1}]`))
	f.Fuzz(func(t *testing.T, coco, results []byte) {
		gt, err := ParseCOCO(coco)
		if err != nil {
			return
		}
		check := func(res *Result) {
			for _, c := range res.Categories {
				for _, v := range c.AP {
					if !math.IsNaN(v) && (v < 0 || v > 1) {
						t.Fatalf("category %d: AP %v", c.ID, c.AP)
					}
				}
			}
			if _, err := json.Marshal(res.Summary); err != nil {
				t.Fatal(err)
			}
		}
		check(Evaluate(gt, groundTruthDetections(gt)))
		if dets, err := ParseResults(results); err == nil {
			check(Evaluate(gt, dets))
		}
	})
}
