package boxes

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/vild/vild/internal/goldenjson"
)

// golden is boxes/testdata/boxes_golden.json, written by testdata/gen_boxes.py
// from torchvision's own functions.
type golden struct {
	IoU struct {
		A, B, IoU []float32
	} `json:"iou"`
	NMS []struct {
		Name         string    `json:"name"`
		Boxes        []float32 `json:"boxes"`
		Scores       []float32 `json:"scores"`
		Classes      []int     `json:"classes"`
		IoUThreshold float32   `json:"iou_threshold"`
		Keep         []int     `json:"nms"`
		BatchedKeep  []int     `json:"batched_nms"`
	} `json:"nms"`
	Coder []struct {
		Weights [4]float32 `json:"weights"`
		Ref     []float32  `json:"ref"`
		Deltas  []float32  `json:"deltas"`
		Decoded []float32  `json:"decoded"`
	} `json:"coder"`
	ClipValue float64 `json:"clip_value"`
	Clip      struct {
		Boxes   []float32 `json:"boxes"`
		Height  float32   `json:"height"`
		Width   float32   `json:"width"`
		Clipped []float32 `json:"clipped"`
		MinSize float32   `json:"min_size"`
		Keep    []int     `json:"keep"`
	} `json:"clip"`
}

func loadGolden(t testing.TB) *golden {
	t.Helper()
	var g golden
	goldenjson.Load(t, "testdata/boxes_golden.json", &g)
	return &g
}

func toBoxes(flat []float32) [][4]float32 {
	out := make([][4]float32, len(flat)/4)
	for i := range out {
		copy(out[i][:], flat[4*i:])
	}
	return out
}

// near reports whether got is within tol of want, relative to max(1, |want|).
func near(got, want, tol float32) bool {
	return math.Abs(float64(got-want)) <= float64(tol)*math.Max(1, math.Abs(float64(want)))
}

func TestIoUMatchesTorchvision(t *testing.T) {
	g := loadGolden(t)
	a, b := toBoxes(g.IoU.A), toBoxes(g.IoU.B)
	for i := range a {
		for j := range b {
			want := g.IoU.IoU[i*len(b)+j]
			if got := IoU(a[i], b[j]); !near(got, want, 1e-6) {
				t.Errorf("IoU(a[%d], b[%d]) = %v, torchvision %v", i, j, got, want)
			}
		}
	}
}

func TestIoU(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b [4]float32
		want float32
	}{
		{"identical", [4]float32{0, 0, 10, 10}, [4]float32{0, 0, 10, 10}, 1},
		{"half overlap", [4]float32{0, 0, 10, 10}, [4]float32{5, 0, 15, 10}, 50.0 / 150},
		{"touching edges", [4]float32{0, 0, 10, 10}, [4]float32{10, 0, 20, 10}, 0},
		{"disjoint", [4]float32{0, 0, 1, 1}, [4]float32{5, 5, 6, 6}, 0},
		{"contained", [4]float32{0, 0, 10, 10}, [4]float32{2, 2, 4, 4}, 4.0 / 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IoU(tc.a, tc.b); !near(got, tc.want, 1e-6) {
				t.Errorf("IoU = %v, want %v", got, tc.want)
			}
			if got, rev := IoU(tc.a, tc.b), IoU(tc.b, tc.a); got != rev {
				t.Errorf("IoU not symmetric: %v vs %v", got, rev)
			}
		})
	}
	if v := IoU([4]float32{1, 1, 1, 1}, [4]float32{1, 1, 1, 1}); !math.IsNaN(float64(v)) {
		t.Errorf("IoU of two empty boxes = %v, torchvision gives NaN", v)
	}
}

func TestNMSMatchesTorchvision(t *testing.T) {
	g := loadGolden(t)
	for _, tc := range g.NMS {
		t.Run(tc.Name, func(t *testing.T) {
			bx := toBoxes(tc.Boxes)
			if got := NMS(bx, tc.Scores, tc.IoUThreshold); !slices.Equal(got, tc.Keep) {
				t.Errorf("NMS kept %d boxes %v…, torchvision %d %v…", len(got), head(got), len(tc.Keep), head(tc.Keep))
			}
			if got := BatchedNMS(bx, tc.Scores, tc.Classes, tc.IoUThreshold); !slices.Equal(got, tc.BatchedKeep) {
				t.Errorf("BatchedNMS kept %d boxes %v…, torchvision %d %v…", len(got), head(got), len(tc.BatchedKeep), head(tc.BatchedKeep))
			}
		})
	}
}

func head(s []int) []int { return s[:min(len(s), 8)] }

func TestNMSProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	bx := make([][4]float32, 400)
	sc := make([]float32, len(bx))
	cl := make([]int, len(bx))
	for i := range bx {
		x, y := r.Float32()*100, r.Float32()*100
		bx[i] = [4]float32{x, y, x + 1 + r.Float32()*40, y + 1 + r.Float32()*40}
		sc[i] = r.Float32()
		cl[i] = r.IntN(4)
	}
	const thr = 0.4
	keep := NMS(bx, sc, thr)
	for a := range keep {
		if a > 0 && sc[keep[a]] > sc[keep[a-1]] {
			t.Fatalf("NMS output not in decreasing score order at %d", a)
		}
		for b := a + 1; b < len(keep); b++ {
			if IoU(bx[keep[a]], bx[keep[b]]) > thr {
				t.Fatalf("kept boxes %d and %d overlap above the threshold", keep[a], keep[b])
			}
		}
	}
	// Every suppressed box overlaps a kept box with a higher or equal score.
	kept := map[int]bool{}
	for _, k := range keep {
		kept[k] = true
	}
	for i := range bx {
		if kept[i] {
			continue
		}
		found := false
		for _, k := range keep {
			if sc[k] >= sc[i] && IoU(bx[k], bx[i]) > thr {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("box %d suppressed without a reason", i)
		}
	}
	// BatchedNMS equals NMS run per class, merged by score.
	bkeep := BatchedNMS(bx, sc, cl, thr)
	var merged []int
	for c := range 4 {
		var idx []int
		for i := range bx {
			if cl[i] == c {
				idx = append(idx, i)
			}
		}
		sub := make([][4]float32, len(idx))
		ssc := make([]float32, len(idx))
		for k, i := range idx {
			sub[k], ssc[k] = bx[i], sc[i]
		}
		for _, k := range NMS(sub, ssc, thr) {
			merged = append(merged, idx[k])
		}
	}
	slices.SortStableFunc(merged, func(a, b int) int {
		if sc[a] != sc[b] {
			if sc[a] > sc[b] {
				return -1
			}
			return 1
		}
		return a - b
	})
	if !slices.Equal(bkeep, merged) {
		t.Fatalf("BatchedNMS differs from per-class NMS")
	}
	if got := NMS(nil, nil, 0.5); len(got) != 0 {
		t.Fatalf("NMS of nothing = %v", got)
	}
}

func TestDecodeMatchesTorchvision(t *testing.T) {
	g := loadGolden(t)
	if float32(g.ClipValue) != DefaultClip {
		t.Fatalf("DefaultClip = %v, torchvision %v", DefaultClip, g.ClipValue)
	}
	for _, tc := range g.Coder {
		c := NewCoder(tc.Weights)
		ref, deltas, want := toBoxes(tc.Ref), toBoxes(tc.Deltas), toBoxes(tc.Decoded)
		for i := range ref {
			got := c.Decode(deltas[i], ref[i])
			// Exp may differ by one ulp from torch's vectorised expf, and
			// x1 = cx - w/2 cancels: the tolerance is relative to the box's
			// largest coordinate.
			scale := float32(1)
			for _, v := range want[i] {
				scale = max(scale, float32(math.Abs(float64(v))))
			}
			for k := range 4 {
				if !near(got[k]/scale, want[i][k]/scale, 1e-6) {
					t.Errorf("weights %v box %d: Decode = %v, torchvision %v", tc.Weights, i, got, want[i])
					break
				}
			}
		}
	}
}

func TestDecodeZeroDeltaIsIdentity(t *testing.T) {
	ref := [4]float32{10, 20, 50, 100}
	if got := NewCoder([4]float32{10, 10, 5, 5}).Decode([4]float32{}, ref); got != ref {
		t.Fatalf("Decode(0) = %v, want %v", got, ref)
	}
}

func TestClipAndRemoveSmallMatchTorchvision(t *testing.T) {
	g := loadGolden(t)
	bx, want := toBoxes(g.Clip.Boxes), toBoxes(g.Clip.Clipped)
	clipped := make([][4]float32, len(bx))
	for i := range bx {
		clipped[i] = Clip(bx[i], g.Clip.Width, g.Clip.Height)
		if clipped[i] != want[i] {
			t.Errorf("Clip(%v) = %v, torchvision %v", bx[i], clipped[i], want[i])
		}
	}
	if got := RemoveSmall(clipped, g.Clip.MinSize); !slices.Equal(got, g.Clip.Keep) {
		t.Errorf("RemoveSmall = %v, torchvision %v", got, g.Clip.Keep)
	}
}

func BenchmarkNMS(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	bx := make([][4]float32, 1000)
	sc := make([]float32, len(bx))
	for i := range bx {
		x, y := r.Float32()*384, r.Float32()*384
		bx[i] = [4]float32{x, y, x + 8 + r.Float32()*100, y + 8 + r.Float32()*100}
		sc[i] = r.Float32()
	}
	b.ReportAllocs()
	for b.Loop() {
		NMS(bx, sc, 0.7)
	}
}
