package eval

import (
	"errors"
	"image"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/vild/vild/mask"
)

func randomMask(r *rand.Rand, w, h int, p float64) mask.Mask {
	m := mask.Mask{Width: w, Height: h, Box: image.Rect(0, 0, w, h), Pix: make([]uint8, w*h)}
	for i := range m.Pix {
		if r.Float64() < p {
			m.Pix[i] = 1
		}
	}
	return m
}

// RunsIoU on run lengths equals the IoU counted pixel by pixel.
func TestRunsIoUEqualsPixelIoU(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		w, h := 1+r.IntN(9), 1+r.IntN(9)
		a, b := randomMask(r, w, h, r.Float64()), randomMask(r, w, h, r.Float64())
		got, want := RunsIoU(a.Runs(), b.Runs()), mask.IoU(&a, &b)
		if got != want {
			t.Fatalf("case %d (%dx%d): RunsIoU %v, pixels %v", i, w, h, got, want)
		}
	}
}

// Mask AP matches by masks: two L-shaped objects whose boxes coincide are
// told apart by segm, not by bbox; a detection without a mask is an error.
func TestEvaluateSegm(t *testing.T) {
	runs := func(rows ...string) []int {
		m := mask.Mask{Width: len(rows[0]), Height: len(rows), Box: image.Rect(0, 0, len(rows[0]), len(rows)),
			Pix: make([]uint8, len(rows[0])*len(rows))}
		for y, row := range rows {
			for x := range row {
				if row[x] == '1' {
					m.Pix[y*m.Width+x] = 1
				}
			}
		}
		return m.Runs()
	}
	upper := runs("1111", "1000", "1000", "1000")
	lower := runs("0001", "0001", "0001", "1111")
	box := [4]float64{0, 0, 4, 4}
	gt := &COCO{Images: []Image{{ID: 1, FileName: "a.png", Width: 4, Height: 4}},
		Categories:  []Category{{ID: 1, Name: "l", Split: "novel"}},
		Annotations: []Annotation{{ID: 1, ImageID: 1, CategoryID: 1, BBox: box, Segm: upper}}}
	wrong := []ImageDetections{{1, []Detection{{1, box, 0.9, lower}}}}
	right := []ImageDetections{{1, []Detection{{1, box, 0.9, upper}}}}
	for _, c := range []struct {
		dets     []ImageDetections
		iou      IoUType
		wantAP50 float64
	}{{wrong, BBox, 1}, {wrong, Segm, 0}, {right, Segm, 1}} {
		res, err := EvaluateType(gt, c.dets, c.iou)
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Summary.All.AP50; math.Abs(got-c.wantAP50) > 1e-9 {
			t.Errorf("%s: AP50 %v, want %v", c.iou, got, c.wantAP50)
		}
	}
	if _, err := EvaluateType(gt, []ImageDetections{{1, []Detection{{1, box, 0.9, nil}}}}, Segm); !errors.Is(err, ErrNoMasks) {
		t.Fatalf("detection without a mask: err = %v", err)
	}
}

// Ground-truth RLEs are read from the annotation file, compressed or not,
// and checked against the image size.
func TestParseCOCOSegmentation(t *testing.T) {
	head := `{"images":[{"id":1,"file_name":"a.png","width":2,"height":2}],"categories":[{"id":1,"name":"x"}],"annotations":[{"id":1,"image_id":1,"category_id":1,"bbox":[0,0,1,1],`
	for _, c := range []struct {
		segm string
		want []int
		ok   bool
	}{
		{`"segmentation":{"size":[2,2],"counts":"013"}`, []int{0, 1, 3}, true},
		{`"segmentation":{"size":[2,2],"counts":[0,1,3]}`, []int{0, 1, 3}, true},
		{`"segmentation":[[0,0,1,0,1,1]]`, nil, true}, // a polygon: no RLE
		{`"segmentation":{"size":[2,3],"counts":"06"}`, nil, false},
		{`"segmentation":{"size":[2,2],"counts":"5"}`, nil, false},
	} {
		c2, err := ParseCOCO([]byte(head + c.segm + `}]}`))
		if (err == nil) != c.ok {
			t.Fatalf("%s: err = %v", c.segm, err)
		}
		if err == nil && len(c2.Annotations[0].Segm) != len(c.want) {
			t.Fatalf("%s: runs %v, want %v", c.segm, c2.Annotations[0].Segm, c.want)
		}
	}
}
