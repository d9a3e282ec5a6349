package eval

import (
	"encoding/json"
	"math"
	"os"
	"strconv"
	"testing"
)

// golden is testdata/golden.json, written by testdata/gen_golden.py with the
// Python evaluation (PYTHONPATH=training /usr/bin/python3 eval/testdata/gen_golden.py).
type golden struct {
	IoUThresholds []float64 `json:"iou_thresholds"`
	RecallPoints  []float64 `json:"recall_points"`
	MaxDets       int       `json:"max_dets"`
	Cases         []struct {
		Name       string          `json:"name"`
		COCO       json.RawMessage `json:"coco"`
		Detections json.RawMessage `json:"detections"`
		Want       struct {
			PerCategory map[string][]*float64 `json:"per_category"`
			Summary     map[string]struct {
				AP         *float64 `json:"AP"`
				AP50       *float64 `json:"AP50"`
				Categories int      `json:"categories"`
			} `json:"summary"`
		} `json:"want"`
	} `json:"cases"`
}

func readGolden(t testing.TB) *golden {
	t.Helper()
	data, err := os.ReadFile("testdata/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	return &g
}

func close9(got float64, want *float64) bool {
	if want == nil {
		return math.IsNaN(got)
	}
	return math.Abs(got-*want) <= 1e-9
}

func TestGoldenConstants(t *testing.T) {
	g := readGolden(t)
	if g.MaxDets != MaxDetections {
		t.Errorf("MaxDetections = %d, Python %d", MaxDetections, g.MaxDets)
	}
	for name, pair := range map[string][2][]float64{"IoU thresholds": {IoUThresholds, g.IoUThresholds}, "recall points": {RecallPoints, g.RecallPoints}} {
		got, want := pair[0], pair[1]
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, Python %d", name, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] { // bit for bit: they decide matches and recall points
				t.Errorf("%s[%d] = %v, Python %v", name, i, got[i], want[i])
			}
		}
	}
}

// TestGolden checks Evaluate against the Python evaluation on randomised cases
// (ties, exact-threshold IoUs, duplicates, crowds, >100 detections, empty
// images, categories without ground truth), read through ParseCOCO and
// ParseResults.
func TestGolden(t *testing.T) {
	g := readGolden(t)
	if len(g.Cases) == 0 {
		t.Fatal("no cases")
	}
	for _, c := range g.Cases {
		t.Run(c.Name, func(t *testing.T) {
			gt, err := ParseCOCO(c.COCO)
			if err != nil {
				t.Fatal(err)
			}
			dets, err := ParseResults(c.Detections)
			if err != nil {
				t.Fatal(err)
			}
			res := Evaluate(gt, dets)
			if len(res.Categories) != len(c.Want.PerCategory) {
				t.Fatalf("%d categories, Python %d", len(res.Categories), len(c.Want.PerCategory))
			}
			worst := 0.0
			for _, cat := range res.Categories {
				want, ok := c.Want.PerCategory[strconv.FormatInt(cat.ID, 10)]
				if !ok || len(want) != len(cat.AP) {
					t.Fatalf("category %d: Python has %v", cat.ID, want)
				}
				for i, w := range want {
					if !close9(cat.AP[i], w) {
						t.Errorf("category %d (%d GT) AP@%.2f = %v, Python %v", cat.ID, cat.NumGT, IoUThresholds[i], cat.AP[i], *w)
					}
					if w != nil {
						worst = max(worst, math.Abs(cat.AP[i]-*w))
					}
				}
			}
			for name, got := range map[string]Group{"novel": res.Summary.Novel, "base": res.Summary.Base, "all": res.Summary.All} {
				want := c.Want.Summary[name]
				if !close9(got.AP, want.AP) || !close9(got.AP50, want.AP50) || got.Categories != want.Categories {
					t.Errorf("%s: got %+v, Python %+v", name, got, want)
				}
			}
			t.Logf("largest per-category difference from Python: %g", worst)
		})
	}
}
