package eval

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// a dataset written by a detector run: other ids, another order, one image and
// one category the ground truth (twoCats) does not have
const detectedDataset = `{"images":[{"id":7,"file_name":"b.jpg","width":100,"height":100},
{"id":8,"file_name":"a.jpg","width":100,"height":100},{"id":9,"file_name":"extra.jpg","width":10,"height":10}],
"categories":[{"id":1,"name":"OWL"},{"id":2,"name":"cat"},{"id":3,"name":"zebra"}],"annotations":[]}`

func TestMapResults(t *testing.T) {
	gt, ds := cocoOf(t, twoCats), cocoOf(t, detectedDataset)
	dets := []ImageDetections{
		{8, []Detection{{2, [4]float64{10, 10, 20, 20}, 0.9, nil}, {3, [4]float64{1, 1, 1, 1}, 0.8, nil}}},
		{7, []Detection{{1, [4]float64{0, 0, 50, 40}, 0.5, nil}}},
		{9, []Detection{{1, [4]float64{0, 0, 5, 5}, 0.4, nil}, {2, [4]float64{0, 0, 5, 5}, 0.3, nil}}},
	}
	got, st, err := MapResults(dets, ds, gt)
	if err != nil {
		t.Fatal(err)
	}
	want := []ImageDetections{
		{1, []Detection{{1, [4]float64{10, 10, 20, 20}, 0.9, nil}}},
		{2, []Detection{{2, [4]float64{0, 0, 50, 40}, 0.5, nil}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mapped %+v, want %+v", got, want)
	}
	wantStats := MapStats{Images: 3, Detections: 5, UnknownImages: 1, DroppedByImage: 2, UnknownCategories: 1, DroppedByCategory: 1}
	if st != wantStats {
		t.Errorf("stats %+v, want %+v", st, wantStats)
	}
	// mapped, the results score as the ground truth itself does
	if r := Evaluate(gt, got); math.Abs(r.Summary.All.AP-1) > 1e-12 {
		t.Errorf("AP %v, want 1", r.Summary.All.AP)
	}
	for _, bad := range [][]ImageDetections{
		{{5, []Detection{{1, [4]float64{0, 0, 1, 1}, 0.5, nil}}}}, // image not in the dataset
		{{7, []Detection{{4, [4]float64{0, 0, 1, 1}, 0.5, nil}}}}, // category not in the dataset
	} {
		if _, _, err := MapResults(bad, ds, gt); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: err = %v", bad, err)
		}
	}
}

func TestOnImages(t *testing.T) {
	gt := cocoOf(t, twoCats).FirstImages(1)
	dets := []ImageDetections{{2, nil}, {1, []Detection{{1, [4]float64{0, 0, 1, 1}, 0.5, nil}}}, {3, nil}}
	if got := OnImages(dets, gt); len(got) != 1 || got[0].ImageID != 1 {
		t.Errorf("kept %+v", got)
	}
}

func TestBoxFromCorners(t *testing.T) {
	// float32 corners widened, then subtracted in float64: 0.1f32 is not 0.1
	got := BoxFromCorners([4]float32{0.1, 2, 10.7, 4.5})
	x1 := float64(float32(0.1))
	if want := [4]float64{x1, 2, float64(float32(10.7)) - x1, 2.5}; got != want {
		t.Errorf("box %v, want %v", got, want)
	}
}

func TestReadResultsFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "r.json")
	os.WriteFile(good, []byte(`[{"image_id":1,"category_id":2,"bbox":[1,2,3,4],"score":0.5}]`), 0o644)
	if d, err := ReadResultsFile(good); err != nil || len(d) != 1 || d[0].Detections[0].BBox != [4]float64{1, 2, 3, 4} {
		t.Errorf("%+v %v", d, err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`[{"image_id":1,"bbox":[1,2,3,4],"score":0.5}]`), 0o644)
	if _, err := ReadResultsFile(bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad: %v", err)
	}
	if _, err := ReadResultsFile(filepath.Join(dir, "none.json")); err == nil {
		t.Error("missing file accepted")
	}
}
