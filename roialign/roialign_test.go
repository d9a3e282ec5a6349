package roialign

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/vild/vild/internal/goldenjson"
)

// golden is testdata/roialign_golden.json, written by testdata/gen_roialign.py
// from torchvision's roi_align and MultiScaleRoIAlign.
type golden struct {
	Single struct {
		Feature f32s   `json:"feature"`
		Shape   [3]int `json:"shape"`
		Boxes   f32s   `json:"boxes"`
		Cases   []struct {
			Aligned       bool    `json:"aligned"`
			SamplingRatio int     `json:"sampling_ratio"`
			SpatialScale  float32 `json:"spatial_scale"`
			OutputSize    int     `json:"output_size"`
			Pooled        f32s    `json:"pooled"`
		} `json:"cases"`
	} `json:"single"`
	Multi struct {
		ImageHW        [2]int    `json:"image_hw"`
		Shapes         [][2]int  `json:"shapes"`
		Features       []f32s    `json:"features"`
		Boxes          f32s      `json:"boxes"`
		Scales         []float32 `json:"scales"`
		Levels         []int     `json:"levels"`
		CanonicalScale int       `json:"canonical_scale"`
		CanonicalLevel int       `json:"canonical_level"`
		OutputSize     int       `json:"output_size"`
		SamplingRatio  int       `json:"sampling_ratio"`
		Pooled         f32s      `json:"pooled"`
	} `json:"multi"`
}

// f32s decodes base64 little-endian float32 arrays.
type f32s = goldenjson.F32s

func loadGolden(t testing.TB) *golden {
	t.Helper()
	var g golden
	goldenjson.Load(t, "testdata/roialign_golden.json", &g)
	return &g
}

func toBoxes(flat []float32) [][4]float32 {
	out := make([][4]float32, len(flat)/4)
	for i := range out {
		out[i] = [4]float32(flat[4*i:])
	}
	return out
}

// The kernel follows torchvision's operation order in float32, so results are
// expected to be equal; the stated tolerance is 1e-5 absolute.
const tol = 1e-5

func compare(t *testing.T, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d values, torchvision %d", len(got), len(want))
	}
	var worst float64
	for i := range got {
		d := math.Abs(float64(got[i] - want[i]))
		worst = max(worst, d)
		if d > tol {
			t.Fatalf("value %d = %v, torchvision %v", i, got[i], want[i])
		}
	}
	t.Logf("max abs diff %g", worst)
}

func TestAlignMatchesTorchvision(t *testing.T) {
	g := loadGolden(t)
	s := g.Single
	for _, tc := range s.Cases {
		name := fmt.Sprintf("aligned=%v/sampling=%d/scale=%v", tc.Aligned, tc.SamplingRatio, tc.SpatialScale)
		t.Run(name, func(t *testing.T) {
			feat := Feature{Data: s.Feature, Channels: s.Shape[0], Height: s.Shape[1], Width: s.Shape[2], Scale: tc.SpatialScale}
			for _, workers := range []int{1, 3} {
				cfg := Config{OutputSize: tc.OutputSize, SamplingRatio: tc.SamplingRatio, Aligned: tc.Aligned, Workers: workers}
				got, err := Align(nil, feat, toBoxes(s.Boxes), cfg)
				if err != nil {
					t.Fatal(err)
				}
				compare(t, got, tc.Pooled)
			}
		})
	}
}

func (g *golden) multiLevels() []Feature {
	m := g.Multi
	levels := make([]Feature, len(m.Features))
	for i, f := range m.Features {
		levels[i] = Feature{Data: f, Channels: len(f) / (m.Shapes[i][0] * m.Shapes[i][1]),
			Height: m.Shapes[i][0], Width: m.Shapes[i][1], Scale: InferScale(m.Shapes[i][0], m.ImageHW[0])}
	}
	return levels
}

func TestMultiScaleMatchesTorchvision(t *testing.T) {
	g := loadGolden(t)
	m := g.Multi
	levels := g.multiLevels()
	for i, f := range levels {
		if f.Scale != m.Scales[i] {
			t.Fatalf("InferScale level %d = %v, torchvision %v", i, f.Scale, m.Scales[i])
		}
	}
	scales := make([]float32, len(levels))
	for i, f := range levels {
		scales[i] = f.Scale
	}
	mapper := NewLevelMapper(scales, m.CanonicalScale, m.CanonicalLevel)
	bx := toBoxes(m.Boxes)
	for i, b := range bx {
		if got := mapper.Level(b); got != m.Levels[i] {
			t.Errorf("box %d %v: level %d, torchvision %d", i, b, got, m.Levels[i])
		}
	}
	cfg := Config{OutputSize: m.OutputSize, SamplingRatio: m.SamplingRatio,
		CanonicalScale: m.CanonicalScale, CanonicalLevel: m.CanonicalLevel}
	got, err := MultiScale(nil, levels, bx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	compare(t, got, m.Pooled)
	// The destination buffer is reused when large enough.
	again, err := MultiScale(got, levels, bx, cfg)
	if err != nil || &again[0] != &got[0] {
		t.Fatalf("buffer not reused (err %v)", err)
	}
}

func TestLevelMapperBoundaries(t *testing.T) {
	m := LevelMapper{KMin: 2, KMax: 5, CanonicalScale: 224, CanonicalLevel: 4}
	for _, tc := range []struct {
		name string
		side float32
		want int
	}{
		{"tiny clamps to first", 4, 0},
		{"112 is level 3", 112, 1},
		{"just below 224", 223, 1},
		{"224 is level 4", 224, 2},
		{"448 is level 5", 448, 3},
		{"huge clamps to last", 5000, 3},
		{"empty box", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := m.Level([4]float32{10, 10, 10 + tc.side, 10 + tc.side}); got != tc.want {
				t.Fatalf("Level = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestConstantFeatureGivesConstant(t *testing.T) {
	// Bilinear sampling of a constant map inside the map returns the constant.
	f := Feature{Data: make([]float32, 2*10*10), Channels: 2, Height: 10, Width: 10, Scale: 0.5}
	for i := range f.Data {
		f.Data[i] = 3
	}
	got, err := Align(nil, f, [][4]float32{{2, 2, 16, 12}}, Config{OutputSize: 3, SamplingRatio: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if math.Abs(float64(v-3)) > 1e-6 {
			t.Fatalf("value %d = %v, want 3", i, v)
		}
	}
}

func TestDegenerateBoxesAreZeroNotPanics(t *testing.T) {
	f := Feature{Data: make([]float32, 10*10), Channels: 1, Height: 10, Width: 10, Scale: 1}
	for i := range f.Data {
		f.Data[i] = 1
	}
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	bx := [][4]float32{{nan, 0, 5, 5}, {0, 0, inf, inf}, {-1e30, -1e30, 1e30, 1e30}, {50, 50, 60, 60}}
	got, err := MultiScale(nil, []Feature{f}, bx, Config{OutputSize: 2, SamplingRatio: 0})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got[:4] {
		if v != 0 {
			t.Fatalf("NaN box value %d = %v, want 0", i, v)
		}
	}
	for i, v := range got[12:] {
		if v != 0 {
			t.Fatalf("box outside the map value %d = %v, want 0", i, v)
		}
	}
}

func TestErrors(t *testing.T) {
	good := Feature{Data: make([]float32, 4*4), Channels: 1, Height: 4, Width: 4, Scale: 0.25}
	bad := good
	bad.Data = bad.Data[:3]
	noScale := good
	noScale.Scale = 0
	half := good
	half.Scale = 0.5
	eighth := good
	eighth.Scale = 0.125
	for _, tc := range []struct {
		name   string
		levels []Feature
		cfg    Config
		want   error
	}{
		{"zero output size", []Feature{good}, Config{}, ErrConfig},
		{"short data", []Feature{bad}, Config{OutputSize: 2}, ErrShape},
		{"zero scale", []Feature{noScale}, Config{OutputSize: 2}, ErrConfig},
		{"no levels", nil, Config{OutputSize: 2}, ErrConfig},
		{"gap between levels", []Feature{half, eighth}, Config{OutputSize: 2, CanonicalScale: 224, CanonicalLevel: 4}, ErrConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := MultiScale(nil, tc.levels, [][4]float32{{0, 0, 2, 2}}, tc.cfg); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// BenchmarkMultiScale pools 300 RoIs from a 384×384 image's four levels
// (strides 4…32) of 64 channels into 7×7, serially and with every core; the
// ratio of the two is the parallel speed-up on this machine.
func BenchmarkMultiScale(b *testing.B) {
	r := rand.New(rand.NewPCG(9, 10))
	var levels []Feature
	for _, stride := range []int{4, 8, 16, 32} {
		h := 384 / stride
		f := Feature{Data: make([]float32, 64*h*h), Channels: 64, Height: h, Width: h, Scale: 1 / float32(stride)}
		for i := range f.Data {
			f.Data[i] = r.Float32()
		}
		levels = append(levels, f)
	}
	bx := make([][4]float32, 300)
	for i := range bx {
		x, y := r.Float32()*300, r.Float32()*300
		side := float32(math.Exp(r.Float64()*math.Log(300/8))) * 8
		bx[i] = [4]float32{x, y, min(x+side, 384), min(y+side*(0.5+r.Float32()), 384)}
	}
	for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			cfg := Config{OutputSize: 7, SamplingRatio: 2, CanonicalScale: 224, CanonicalLevel: 4, Workers: workers}
			var dst []float32
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if dst, err = MultiScale(dst, levels, bx, cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
