package eval

import (
	"math"
	"strings"
	"testing"
)

func cocoOf(t *testing.T, s string) *COCO {
	t.Helper()
	c, err := ParseCOCO([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const twoCats = `{"images":[{"id":1,"file_name":"a.jpg","width":100,"height":100},
{"id":2,"file_name":"b.jpg","width":100,"height":100}],
"categories":[{"id":1,"name":"cat","split":"base"},{"id":2,"name":"owl","split":"novel"},{"id":3,"name":"yak","split":"novel"}],
"annotations":[{"id":1,"image_id":1,"category_id":1,"bbox":[10,10,20,20]},
{"id":2,"image_id":2,"category_id":2,"bbox":[0,0,50,40]}]}`

func TestEvaluateByHand(t *testing.T) {
	gt := cocoOf(t, twoCats)
	for _, tc := range []struct {
		name   string
		dets   []ImageDetections
		cat    AP // AP of category 1 at every threshold
		owlAP  float64
		groups Summary
	}{
		{
			name: "perfect",
			dets: []ImageDetections{{1, []Detection{{1, [4]float64{10, 10, 20, 20}, 0.9, nil}}}, {2, []Detection{{2, [4]float64{0, 0, 50, 40}, 0.5, nil}}}},
			cat:  all(1), owlAP: 1,
		},
		{
			// a false positive above the true positive: precision 1/2 at recall 1
			name: "false positive first",
			dets: []ImageDetections{{1, []Detection{{1, [4]float64{60, 60, 20, 20}, 0.9, nil}, {1, [4]float64{10, 10, 20, 20}, 0.8, nil}}}},
			cat:  all(0.5), owlAP: 0,
		},
		{
			// a false positive on another image with the same score comes later
			// (image order), so it does not lower the precision at recall 1
			name: "tie across images",
			dets: []ImageDetections{{2, []Detection{{1, [4]float64{60, 60, 20, 20}, 0.8, nil}}}, {1, []Detection{{1, [4]float64{10, 10, 20, 20}, 0.8, nil}}}},
			cat:  all(1), owlAP: 0,
		},
		{
			// IoU exactly 0.5 (half the height) matches at 0.50 only
			name: "IoU on the threshold",
			dets: []ImageDetections{{1, []Detection{{1, [4]float64{10, 10, 20, 10}, 0.8, nil}}}},
			cat:  AP{1, 0, 0, 0, 0, 0, 0, 0, 0, 0}, owlAP: 0,
		},
		{
			name: "no detections",
			cat:  all(0), owlAP: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Evaluate(gt, tc.dets)
			for i, want := range tc.cat {
				if got := res.Categories[0].AP[i]; math.Abs(got-want) > 1e-12 {
					t.Errorf("cat AP@%.2f = %v, want %v", IoUThresholds[i], got, want)
				}
			}
			if got := res.Categories[1].Mean(); math.Abs(got-tc.owlAP) > 1e-12 {
				t.Errorf("owl AP = %v, want %v", got, tc.owlAP)
			}
			if !math.IsNaN(res.Categories[2].AP[0]) || res.Categories[2].NumGT != 0 {
				t.Errorf("yak (no ground truth) = %+v, want NaN", res.Categories[2])
			}
			s := res.Summary
			if s.Novel.Categories != 1 || s.Base.Categories != 1 || s.All.Categories != 2 {
				t.Errorf("category counts %+v", s)
			}
			if math.Abs(s.Novel.AP-tc.owlAP) > 1e-12 || math.Abs(s.Base.AP50-tc.cat[0]) > 1e-12 ||
				math.Abs(s.All.AP50-(tc.cat[0]+tc.owlAP)/2) > 1e-12 {
				t.Errorf("summary %+v", s)
			}
		})
	}
}

type AP = [10]float64

func all(v float64) AP {
	var a AP
	for i := range a {
		a[i] = v
	}
	return a
}

// TestEvaluateMaxDetections: only the 100 best detections of an image and
// category count, so a true positive ranked 101st is lost.
func TestEvaluateMaxDetections(t *testing.T) {
	gt := cocoOf(t, twoCats)
	var d []Detection
	for i := range 100 {
		d = append(d, Detection{1, [4]float64{70, 70, 5, 5}, 0.9 - float64(i)*1e-3, nil})
	}
	d = append(d, Detection{1, [4]float64{10, 10, 20, 20}, 0.1, nil})
	res := Evaluate(gt, []ImageDetections{{1, d}})
	if got := res.Categories[0].Mean(); got != 0 {
		t.Errorf("AP = %v, want 0 (the match is the 101st detection)", got)
	}
	d[len(d)-1].Score = 0.95
	if got := Evaluate(gt, []ImageDetections{{1, d}}).Categories[0].Mean(); math.Abs(got-1) > 1e-12 {
		t.Errorf("AP = %v, want 1 when the match ranks first", got)
	}
}

// TestEvaluateGroundTruthAsDetections: every golden case's ground truth,
// scored as detections, gives AP 1 for every category with ground truth.
func TestEvaluateGroundTruthAsDetections(t *testing.T) {
	for _, c := range readGolden(t).Cases {
		gt, err := ParseCOCO(c.COCO)
		if err != nil {
			t.Fatal(err)
		}
		res := Evaluate(gt, groundTruthDetections(gt))
		for _, cat := range res.Categories {
			if cat.NumGT > 0 && math.Abs(cat.Mean()-1) > 1e-12 {
				t.Errorf("%s: category %d AP = %v, want 1", c.Name, cat.ID, cat.AP)
			}
		}
		if s := res.Summary; math.Abs(s.All.AP-1) > 1e-12 || math.Abs(s.All.AP50-1) > 1e-12 || math.Abs(s.Base.AP-1) > 1e-12 {
			t.Errorf("%s: summary %+v", c.Name, s)
		}
	}
}

func groundTruthDetections(gt *COCO) []ImageDetections {
	var out []ImageDetections
	for _, a := range gt.Annotations {
		out = append(out, ImageDetections{a.ImageID, []Detection{{a.CategoryID, a.BBox, 1, nil}}})
	}
	return out
}

func TestParseCOCOErrors(t *testing.T) {
	im := `{"id":1,"file_name":"a.jpg","width":10,"height":10}`
	cat := `{"id":1,"name":"cat"}`
	doc := func(images, cats, anns string) string {
		return `{"images":[` + images + `],"categories":[` + cats + `],"annotations":[` + anns + `]}`
	}
	ann := func(rest string) string { return doc(im, cat, `{"id":1,"image_id":1,"category_id":1,`+rest+`}`) }
	for _, tc := range []struct{ name, in, want string }{
		{"not JSON", `{`, "unexpected EOF"},
		{"trailing data", doc(im, cat, "") + `{}`, "after the JSON value"},
		{"missing list", `{"images":[],"categories":[]}`, "must all be lists"},
		{"null list", `{"images":[],"categories":[],"annotations":null}`, "must all be lists"},
		{"image without size", doc(`{"id":1,"file_name":"a.jpg"}`, cat, ""), "needs id, file_name"},
		{"duplicate image", doc(im+","+im, cat, ""), "duplicate image id"},
		{"zero size", doc(`{"id":1,"file_name":"a.jpg","width":0,"height":10}`, cat, ""), "is 0x10"},
		{"fractional id", doc(`{"id":1.5,"file_name":"a.jpg","width":1,"height":1}`, cat, ""), "cannot unmarshal"},
		{"escaping file name", doc(`{"id":1,"file_name":"../x.jpg","width":1,"height":1}`, cat, ""), "not a relative path"},
		{"absolute file name", doc(`{"id":1,"file_name":"/etc/x.jpg","width":1,"height":1}`, cat, ""), "not a relative path"},
		{"duplicate category", doc(im, cat+","+cat, ""), "duplicate category id"},
		{"same name", doc(im, cat+`,{"id":2,"name":"Cat"}`, ""), "both named"},
		{"empty name", doc(im, `{"id":1,"name":""}`, ""), "must be 1 to"},
		{"control character", doc(im, `{"id":1,"name":"a\nb"}`, ""), "control"},
		{"unknown split", doc(im, `{"id":1,"name":"cat","split":"seen"}`, ""), "neither"},
		{"unknown image", doc(im, cat, `{"id":1,"image_id":9,"category_id":1,"bbox":[0,0,1,1]}`), "image 9 is not listed"},
		{"unknown category", doc(im, cat, `{"id":1,"image_id":1,"category_id":9,"bbox":[0,0,1,1]}`), "category 9 is not listed"},
		{"short box", ann(`"bbox":[0,0,1]`), "3 numbers"},
		{"negative size", ann(`"bbox":[0,0,-1,1]`), "negative size"},
		{"huge box", ann(`"bbox":[0,0,1e300,1]`), "not finite"},
		{"crowd", ann(`"bbox":[0,0,1,1],"iscrowd":1`), "crowd"},
		{"no box", ann(`"area":1`), "needs id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCOCO([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestParseResults(t *testing.T) {
	dets, err := ParseResults([]byte(`[{"image_id":2,"category_id":1,"bbox":[0,0,1,1],"score":0.5},
	{"image_id":1,"category_id":1,"bbox":[0,0,2,2],"score":0.7},{"image_id":2,"category_id":3,"bbox":[1,1,1,1],"score":0.5}]`))
	if err != nil {
		t.Fatal(err)
	}
	if len(dets) != 2 || dets[0].ImageID != 2 || len(dets[0].Detections) != 2 || dets[0].Detections[1].CategoryID != 3 || dets[1].Detections[0].Score != 0.7 {
		t.Fatalf("got %+v", dets)
	}
	for _, in := range []string{`{}`, `null`, `[{"image_id":1,"category_id":1,"bbox":[0,0,1,1]}]`, `[{"image_id":1,"category_id":1,"bbox":[0,0,1],"score":1}]`} {
		if _, err := ParseResults([]byte(in)); err == nil {
			t.Errorf("%s: no error", in)
		}
	}
}

func TestFirstImages(t *testing.T) {
	gt := cocoOf(t, twoCats)
	one := gt.FirstImages(1)
	if len(one.Images) != 1 || len(one.Annotations) != 1 || one.Annotations[0].ImageID != 1 || len(one.Categories) != 3 {
		t.Fatalf("got %+v", one)
	}
	if gt.FirstImages(0) != gt || gt.FirstImages(5) != gt {
		t.Fatal("n <= 0 or n >= len should keep everything")
	}
}

func TestPairwiseSumMatchesSequentialClosely(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 101, 128, 129, 300, 1000} {
		a := make([]float64, n)
		want := 0.0
		for i := range a {
			a[i] = 1 / float64(i+3)
			want += a[i]
		}
		if got := pairwiseSum(a); math.Abs(got-want) > 1e-12 {
			t.Errorf("n=%d: %v, want about %v", n, got, want)
		}
	}
}
