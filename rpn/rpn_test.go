package rpn

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/vild/vild/internal/goldenjson"
)

// goldenCase is one case of testdata/rpn_golden.json, written by
// testdata/gen_rpn.py from torchvision's RegionProposalNetwork.
type goldenCase struct {
	Name           string      `json:"name"`
	ImageHW        [2]int      `json:"image_hw"`
	PaddedHW       [2]int      `json:"padded_hw"`
	FeatHW         [][2]int    `json:"feat_hw"`
	Sizes          [][]float32 `json:"sizes"`
	AspectRatios   []float32   `json:"aspect_ratios"`
	PreNMSTopN     int         `json:"pre_nms_top_n"`
	PostNMSTopN    int         `json:"post_nms_top_n"`
	NMSIoU         float32     `json:"nms_iou"`
	MinSize        float32     `json:"min_size"`
	ScoreThreshold float32     `json:"score_threshold"`
	Logits         []f32s      `json:"logits"`
	Deltas         []f32s      `json:"deltas"`
	Anchors        f32s        `json:"anchors"`
	Proposals      f32s        `json:"proposals"`
	Scores         f32s        `json:"scores"`
}

// f32s decodes base64 little-endian float32 arrays.
type f32s = goldenjson.F32s

func loadGolden(t testing.TB) []goldenCase {
	t.Helper()
	var g struct{ Cases []goldenCase }
	goldenjson.Load(t, "testdata/rpn_golden.json", &g)
	return g.Cases
}

func (c goldenCase) inputs() ([]Level, Config, Image) {
	levels := make([]Level, len(c.FeatHW))
	for i, hw := range c.FeatHW {
		levels[i] = Level{Logits: c.Logits[i], Deltas: c.Deltas[i], Height: hw[0], Width: hw[1], Sizes: c.Sizes[i]}
	}
	cfg := Config{
		AspectRatios: c.AspectRatios, PreNMSTopN: c.PreNMSTopN, PostNMSTopN: c.PostNMSTopN,
		NMSIoU: c.NMSIoU, MinSize: c.MinSize, ScoreThreshold: c.ScoreThreshold, Weights: [4]float32{1, 1, 1, 1},
	}
	img := Image{Height: c.ImageHW[0], Width: c.ImageHW[1], PaddedHeight: c.PaddedHW[0], PaddedWidth: c.PaddedHW[1]}
	return levels, cfg, img
}

func TestAnchorsMatchTorchvision(t *testing.T) {
	for _, c := range loadGolden(t) {
		t.Run(c.Name, func(t *testing.T) {
			var all [][4]float32
			for i, hw := range c.FeatHW {
				sy, sx := Strides(hw[0], hw[1], c.PaddedHW[0], c.PaddedHW[1])
				all = append(all, Anchors(CellAnchors(c.Sizes[i], c.AspectRatios), hw[0], hw[1], sy, sx)...)
			}
			if len(all)*4 != len(c.Anchors) {
				t.Fatalf("%d anchors, torchvision %d", len(all), len(c.Anchors)/4)
			}
			for i, a := range all {
				if want := [4]float32(c.Anchors[4*i:]); a != want {
					t.Fatalf("anchor %d = %v, torchvision %v", i, a, want)
				}
			}
		})
	}
}

func TestCellAnchors(t *testing.T) {
	// torchvision: size 32, ratios 0.5, 1, 2 → w = 45.25, 32, 22.63; h = 22.63, 32, 45.25.
	got := CellAnchors([]float32{32}, []float32{0.5, 1, 2})
	want := [][4]float32{{-23, -11, 23, 11}, {-16, -16, 16, 16}, {-11, -23, 11, 23}}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("cell anchor %d = %v, want %v", i, got[i], want[i])
		}
	}
}

// TestProposeMatchesTorchvision compares boxes and scores position by position.
// Proposals whose float32 scores tie (sigmoid saturates at 1, and neighbouring
// logits can round to one float32) may come in a different order when Go's exp
// and torch's vectorised expf differ by one ulp: such tie groups are compared
// as sets.
func TestProposeMatchesTorchvision(t *testing.T) {
	for _, c := range loadGolden(t) {
		t.Run(c.Name, func(t *testing.T) {
			p, err := Propose(c.inputs())
			if err != nil {
				t.Fatal(err)
			}
			n := len(c.Scores)
			if len(p.Boxes) != n {
				t.Fatalf("%d proposals, torchvision %d", len(p.Boxes), n)
			}
			for start := 0; start < n; {
				end := start + 1
				for end < n && ulps(c.Scores[end-1], c.Scores[end]) <= 1 {
					end++
				}
				used := make([]bool, end-start)
				for i := start; i < end; i++ {
					if ulps(p.Scores[i], c.Scores[i]) > 1 {
						t.Fatalf("score %d = %v, torchvision %v", i, p.Scores[i], c.Scores[i])
					}
					found := false
					for j := start; j < end && !found; j++ {
						if !used[j-start] && boxNear(p.Boxes[i], [4]float32(c.Proposals[4*j:])) {
							used[j-start], found = true, true
						}
					}
					if !found {
						t.Fatalf("proposal %d %v (score %v) not among torchvision's %d..%d, first %v",
							i, p.Boxes[i], p.Scores[i], start, end-1, c.Proposals[4*start:4*start+4])
					}
				}
				start = end
			}
			// Outputs are in decreasing score order and logits agree with scores.
			for i := range p.Scores {
				if i > 0 && p.Scores[i] > p.Scores[i-1] {
					t.Fatalf("scores not decreasing at %d", i)
				}
				if Sigmoid(p.Logits[i]) != p.Scores[i] {
					t.Fatalf("score %d is not sigmoid(logit)", i)
				}
			}
		})
	}
}

func ulps(a, b float32) int64 {
	d := int64(math.Float32bits(a)) - int64(math.Float32bits(b))
	return max(d, -d)
}

// boxNear allows for exp's last-ulp difference, relative to the coordinates.
func boxNear(a, b [4]float32) bool {
	for k := range 4 {
		if math.Abs(float64(a[k]-b[k])) > 1e-5*math.Max(1, math.Abs(float64(b[k]))) {
			return false
		}
	}
	return true
}

func TestProposeErrors(t *testing.T) {
	good := Level{Logits: make([]float32, 3*4*4), Deltas: make([]float32, 12*4*4), Height: 4, Width: 4, Sizes: []float32{16}}
	cfg := Config{AspectRatios: []float32{0.5, 1, 2}, PreNMSTopN: 10, PostNMSTopN: 5, NMSIoU: 0.7, Weights: [4]float32{1, 1, 1, 1}}
	img := Image{Height: 16, Width: 16, PaddedHeight: 16, PaddedWidth: 16}
	short := good
	short.Deltas = short.Deltas[:10]
	noRatios := cfg
	noRatios.AspectRatios = nil
	zeroTop := cfg
	zeroTop.PostNMSTopN = 0
	zeroWeight := cfg
	zeroWeight.Weights[2] = 0
	for _, tc := range []struct {
		name   string
		levels []Level
		cfg    Config
		img    Image
		want   error
	}{
		{"deltas too short", []Level{short}, cfg, img, ErrShape},
		{"no aspect ratios", []Level{good}, noRatios, img, ErrConfig},
		{"zero post top-n", []Level{good}, zeroTop, img, ErrConfig},
		{"zero coder weight", []Level{good}, zeroWeight, img, ErrConfig},
		{"padded smaller than image", []Level{good}, cfg, Image{Height: 20, Width: 16, PaddedHeight: 16, PaddedWidth: 16}, ErrConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Propose(tc.levels, tc.cfg, tc.img); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	p, err := Propose([]Level{good}, cfg, img)
	if err != nil || len(p.Boxes) == 0 || len(p.Boxes) > 5 {
		t.Fatalf("valid input: %d proposals, err %v", len(p.Boxes), err)
	}
}

func TestTopN(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const na, hw = 3, 50
	logits := make([]float32, na*hw)
	for i := range logits {
		logits[i] = float32(r.IntN(20)) // many ties
	}
	for _, n := range []int{1, 7, 100, na * hw, na*hw + 5} {
		got := topN(logits, na, hw, n, nil)
		if len(got) != min(n, na*hw) {
			t.Fatalf("n=%d: %d results", n, len(got))
		}
		// Reference: full sort by (logit desc, flat index asc).
		var want []int
		for v := 19; v >= 0; v-- {
			for flat := range na * hw {
				if logits[(flat%na)*hw+flat/na] == float32(v) {
					want = append(want, flat)
				}
			}
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("n=%d: position %d = %d, want %d", n, i, got[i], want[i])
			}
		}
	}
}

// BenchmarkPropose is the manifest's default: 5 levels (strides 4…64) of a
// 384×384 input, 3 anchors each, pre-NMS top 1000, post-NMS top 300.
func BenchmarkPropose(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	var levels []Level
	for i, stride := range []int{4, 8, 16, 32, 64} {
		h := 384 / stride
		lv := Level{Height: h, Width: h, Sizes: []float32{float32(int(16) << i)},
			Logits: make([]float32, 3*h*h), Deltas: make([]float32, 12*h*h)}
		for k := range lv.Logits {
			lv.Logits[k] = float32(r.NormFloat64() * 2)
		}
		for k := range lv.Deltas {
			lv.Deltas[k] = float32(r.NormFloat64() * 0.5)
		}
		levels = append(levels, lv)
	}
	cfg := Config{AspectRatios: []float32{0.5, 1, 2}, PreNMSTopN: 1000, PostNMSTopN: 300,
		NMSIoU: 0.7, MinSize: 1e-3, Weights: [4]float32{1, 1, 1, 1}}
	img := Image{Height: 384, Width: 384, PaddedHeight: 384, PaddedWidth: 384}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Propose(levels, cfg, img); err != nil {
			b.Fatal(err)
		}
	}
}
