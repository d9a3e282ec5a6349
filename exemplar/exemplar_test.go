package exemplar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math"
	"path"
	"testing"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/roialign"
	"github.com/vild/vild/vocabulary"
)

// Tolerances (max abs difference) against the exporter's PyTorch numbers,
// docs/bundle.md: each stage on its own golden input, then the chain.
const (
	tolCrops = 1e-4 // input.png + boxes → crops.npy (normalised crops)
	tolGraph = 1e-4 // crops.npy → crop_embeddings.npy under ONNX Runtime
	tolChain = 1e-4 // input.png + boxes → embeddings.npy
)

// TestGoldenParity runs every bundle with an image encoder (the default one,
// and $VILD_TEST_BUNDLES) against its golden/exemplar case.
func TestGoldenParity(t *testing.T) {
	rt := testbundle.Runtime(t, ort.Config{})
	ran := 0
	for _, b := range testbundle.All(t) {
		if b.Manifest.ImageEncoder == nil {
			if _, err := Open(b, rt); !errors.Is(err, ErrNoEncoder) {
				t.Errorf("%s: bundle without an image encoder: err = %v, want ErrNoEncoder", b.Source, err)
			}
			continue
		}
		ran++
		t.Run(b.Manifest.Name, func(t *testing.T) { goldenCase(t, b, rt) })
	}
	if ran == 0 {
		t.Skip("no bundle with an image encoder")
	}
}

func goldenCase(t *testing.T, b *bundle.Bundle, rt ort.Runtime) {
	e, err := Open(b, rt)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	dir := path.Join(bundle.GoldenDir, "exemplar")
	raw, err := b.ReadFile(path.Join(dir, "exemplars.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Image string       `json:"image"`
		Boxes [][4]float32 `json:"boxes"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	pngData, err := b.ReadFile(meta.Image)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(pngData))
	if err != nil {
		t.Fatal(err)
	}
	wantCrops := testbundle.Array(t, b, path.Join(dir, "crops.npy"))
	wantCropEmb := testbundle.Array(t, b, path.Join(dir, "crop_embeddings.npy"))
	want := testbundle.Array(t, b, path.Join(dir, "embeddings.npy"))

	var crops []float32
	for _, box := range meta.Boxes {
		c, err := e.Crops(img, box)
		if err != nil {
			t.Fatal(err)
		}
		crops = append(crops, c...)
	}
	if d, at := testbundle.MaxAbsDiff(crops, wantCrops.F32); d > tolCrops {
		t.Errorf("crops: max abs diff %.3g at %d, tolerance %g", d, at, tolCrops)
	} else {
		t.Logf("crops: max abs diff %.3g", d)
	}
	ctx := context.Background()
	got, err := e.Run(ctx, wantCrops.F32)
	if err != nil {
		t.Fatal(err)
	}
	if d, at := testbundle.MaxAbsDiff(flat(got), wantCropEmb.F32); d > tolGraph {
		t.Errorf("graph: max abs diff %.3g at %d, tolerance %g", d, at, tolGraph)
	} else {
		t.Logf("graph: max abs diff %.3g", d)
	}
	emb, err := e.Embed(ctx, img, meta.Boxes)
	if err != nil {
		t.Fatal(err)
	}
	if d, at := testbundle.MaxAbsDiff(flat(emb), want.F32); d > tolChain {
		t.Errorf("embeddings: max abs diff %.3g at %d, tolerance %g", d, at, tolChain)
	} else {
		t.Logf("embeddings (png → crops → graph → mean): max abs diff %.3g", d)
	}
	// Another box of the same image embeds differently: the crop follows the box.
	if other, err := e.Embed(ctx, img, [][4]float32{{10, 10, 60, 60}}); err != nil || cosine(other[0], emb[0]) > 0.999 {
		t.Errorf("a different box embeds alike: cosine %v, err %v", cosine(other[0], emb[0]), err)
	}
}

func flat(rows [][]float32) []float32 {
	var out []float32
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}

func cosine(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

func TestCheckBox(t *testing.T) {
	nan := float32(math.NaN())
	for _, tc := range []struct {
		box  [4]float32
		want string
	}{
		{[4]float32{0, 0, 100, 50}, ""},
		{[4]float32{10.5, 3, 12.5, 5}, ""},
		{[4]float32{nan, 0, 10, 10}, "finite"},
		{[4]float32{-1, 0, 10, 10}, "inside"},
		{[4]float32{0, 0, 101, 10}, "inside"},
		{[4]float32{0, 0, 10, 51}, "inside"},
		{[4]float32{10, 0, 5, 10}, "at least 2"},
		{[4]float32{0, 0, 10, 1.5}, "at least 2"},
	} {
		err := CheckBox(tc.box, 100, 50)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%v: %v", tc.box, err)
			}
			continue
		}
		if !errors.Is(err, ErrBox) || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%v: err = %v, want ErrBox mentioning %q", tc.box, err, tc.want)
		}
	}
}

// fakeSession stands in for image_encoder.onnx: each crop's embedding is its
// channel means, so a test can see which pixels a crop read.
type fakeSession struct{ n int64 }

func (s fakeSession) Name() string { return "image_encoder.onnx" }
func (s fakeSession) Inputs() []ort.Info {
	return []ort.Info{{Name: InputImage, DType: ort.Float32, Shape: []int64{-1, 3, s.n, s.n}}}
}
func (s fakeSession) Outputs() []ort.Info {
	return []ort.Info{{Name: OutputImageEmbeddings, DType: ort.Float32, Shape: []int64{-1, 3}}}
}
func (s fakeSession) Close() error { return nil }
func (s fakeSession) Run(_ context.Context, in map[string]ort.Tensor) (map[string]ort.Tensor, error) {
	x := in[InputImage]
	k, plane := int(x.Shape[0]), int(s.n*s.n)
	out := make([]float32, 0, 3*k)
	for i := range 3 * k {
		var sum float32
		for _, v := range x.F32[i*plane : (i+1)*plane] {
			sum += v
		}
		out = append(out, sum/float32(plane))
	}
	return map[string]ort.Tensor{OutputImageEmbeddings: {Shape: []int64{int64(k), 3}, F32: out}}, nil
}

func TestCropsReadTheBox(t *testing.T) {
	cfg := bundle.ImageEncoder{File: bundle.ImageEncoderFile, InputSize: 8, Std: [3]float32{1, 1, 1},
		CropScales: []float32{1}, Crop: "square"}
	e, err := New(cfg, 3, fakeSession{n: 8})
	if err != nil {
		t.Fatal(err)
	}
	// A red square on blue: a box on the square embeds red, one beside it blue.
	img := image.NewNRGBA(image.Rect(0, 0, 64, 48))
	for y := range 48 {
		for x := range 64 {
			c := color.NRGBA{0, 0, 255, 255}
			if x >= 8 && x < 24 && y >= 8 && y < 24 {
				c = color.NRGBA{255, 0, 0, 255}
			}
			img.SetNRGBA(x, y, c)
		}
	}
	emb, err := e.Embed(context.Background(), img, [][4]float32{{8, 8, 24, 24}, {40, 20, 56, 36}})
	if err != nil {
		t.Fatal(err)
	}
	if emb[0][0] < 0.99 || emb[0][2] > 0.01 || emb[1][2] < 0.99 || emb[1][0] > 0.01 {
		t.Errorf("embeddings %v, want red then blue", emb)
	}
	// A box at the corner at 2x reads zeros outside the image: the mean falls.
	cfg.CropScales = []float32{2}
	e2, _ := New(cfg, 3, fakeSession{n: 8})
	c, err := e2.Crops(img, [4]float32{0, 0, 16, 16})
	if err != nil {
		t.Fatal(err)
	}
	if c[0] != 0 || c[63] == 0 {
		t.Errorf("2x crop at the corner: first red %v (want 0, outside), last %v (want red inside)", c[0], c[63])
	}
	if _, err := e.Embed(context.Background(), img, [][4]float32{{0, 0, 65, 10}}); !errors.Is(err, ErrBox) {
		t.Errorf("box outside: %v", err)
	}
	if _, err := New(cfg, 4, fakeSession{n: 8}); err == nil {
		t.Error("a graph of another dimension was accepted")
	}
}

// halvesSession embeds a crop as the mean of channel 0 over its left half,
// over its right half, and a constant: it tells a crop from its mirror image.
type halvesSession struct{ fakeSession }

func (s halvesSession) Run(_ context.Context, in map[string]ort.Tensor) (map[string]ort.Tensor, error) {
	x := in[InputImage]
	n := int(s.n)
	k := int(x.Shape[0])
	out := make([]float32, 0, 3*k)
	for i := range k {
		var left, right float32
		for r := range n {
			for c := range n {
				v := x.F32[i*3*n*n+r*n+c]
				if c < n/2 {
					left += v
				} else {
					right += v
				}
			}
		}
		out = append(out, left/float32(n*n/2), right/float32(n*n/2), 0.1)
	}
	return map[string]ort.Tensor{OutputImageEmbeddings: {Shape: []int64{int64(k), 3}, F32: out}}, nil
}

func TestEmbedRegionsViews(t *testing.T) {
	cfg := bundle.ImageEncoder{File: bundle.ImageEncoderFile, InputSize: 8, Std: [3]float32{1, 1, 1},
		CropScales: []float32{1}, Crop: "square"}
	e, err := New(cfg, 3, halvesSession{fakeSession{n: 8}})
	if err != nil {
		t.Fatal(err)
	}
	// A 32x32 picture whose left half is bright in channel 0.
	const side = 32
	rgb := roialign.Feature{Data: make([]float32, 3*side*side), Channels: 3, Height: side, Width: side, Scale: 1}
	for y := range side {
		for x := range side / 2 {
			rgb.Data[y*side+x] = 1
		}
	}
	box := [][4]float32{{0, 0, side, side}}
	ctx := context.Background()
	plain, err := e.EmbedRegions(ctx, rgb, box, Views{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !(plain[0][0] > 0.9 && plain[0][1] < 0.1) {
		t.Errorf("unmirrored view %v: want the bright left half in the first component", plain[0])
	}
	both, err := e.EmbedRegions(ctx, rgb, box, Views{Mirror: true}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(both[0][0]-both[0][1])) > 1e-6 || both[0][0] < 0.5 {
		t.Errorf("a view and its mirror %v: want equal halves", both[0])
	}
	// Views.Scales replace the encoder's: at 2x the box's square reaches
	// outside the picture (zeros), so the bright share of the crop falls.
	wide, err := e.EmbedRegions(ctx, rgb, box, Views{Scales: []float32{2}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if cosine(wide[0], plain[0]) > 0.999 {
		t.Errorf("2x view %v embeds as the 1x view %v", wide[0], plain[0])
	}
	if got := mirrored([]float32{1, 2, 3, 4, 5, 6, 7, 8, 9}, 3); !slicesEqual(got, []float32{3, 2, 1, 6, 5, 4, 9, 8, 7}) {
		t.Errorf("mirrored rows: %v", got)
	}
}

// realEncoder opens the image encoder of the first bundle that has one (the
// default bundle, or $VILD_TEST_BUNDLES), closed when the test ends; it
// skips the test when there is none.
func realEncoder(t *testing.T) *Encoder {
	t.Helper()
	rt := testbundle.Runtime(t, ort.Config{})
	var b *bundle.Bundle
	for _, c := range testbundle.All(t) {
		if c.Manifest.ImageEncoder != nil {
			b = c
			break
		}
	}
	if b == nil {
		t.Skip("no bundle with an image encoder")
	}
	e, err := Open(b, rt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// TestMirrorIsTheMirroredPicture checks, with a real image encoder, that a
// region's mirrored view embeds as the same region of the mirrored picture.
func TestMirrorIsTheMirroredPicture(t *testing.T) {
	e := realEncoder(t)
	const w, h = 96, 64
	pic := roialign.Feature{Data: make([]float32, 3*w*h), Channels: 3, Height: h, Width: w, Scale: 1}
	flip := roialign.Feature{Data: make([]float32, 3*w*h), Channels: 3, Height: h, Width: w, Scale: 1}
	for c := range 3 {
		for y := range h {
			for x := range w {
				v := float32(math.Abs(math.Sin(float64(x*(c+1))/7+float64(y)/5))) * float32(x) / w
				pic.Data[(c*h+y)*w+x] = v
				flip.Data[(c*h+y)*w+(w-1-x)] = v
			}
		}
	}
	boxes := [][4]float32{{10, 8, 50, 40}, {40, 20, 90, 60}}
	flipped := make([][4]float32, len(boxes))
	for i, b := range boxes {
		flipped[i] = [4]float32{w - b[2], b[1], w - b[0], b[3]}
	}
	ctx := context.Background()
	views := Views{Scales: []float32{1.25}}
	mirror, err := e.EmbedRegions(ctx, pic, boxes, Views{Scales: views.Scales, Mirror: true}, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.EmbedRegions(ctx, pic, boxes, views, 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.EmbedRegions(ctx, flip, flipped, views, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range boxes {
		if d, _ := testbundle.MaxAbsDiff(mirror[i], vocabulary.MeanEmbedding([][]float32{a[i], m[i]})); d > 1e-5 {
			t.Errorf("region %d: mirrored view differs from the mirrored picture's by %.3g", i, d)
		}
		if cosine(a[i], m[i]) > 0.9999 {
			t.Errorf("region %d: the view and its mirror embed alike (cosine %v); the test shows nothing", i, cosine(a[i], m[i]))
		}
	}
}

func slicesEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestEmbedUnshiftedViews checks, with a real image encoder, that an
// exemplar embedded with other views (EmbedUnshiftedViews, windowed crops of
// an image) equals the same box embedded as a region with those views
// (EmbedRegions on the whole picture), that EmbedUnshifted uses the
// encoder's own views, and that the mirror changes an exemplar's embedding
// (the encoder's views against them with the other mirror setting), so the
// comparisons can fail.
func TestEmbedUnshiftedViews(t *testing.T) {
	e := realEncoder(t)
	const w, h = 96, 64
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	pic := roialign.Feature{Data: make([]float32, 3*w*h), Channels: 3, Height: h, Width: w, Scale: 1}
	for y := range h {
		for x := range w {
			var px [3]uint8
			for c := range 3 {
				px[c] = uint8(255 * math.Abs(math.Sin(float64(x*(c+1))/7+float64(y)/5)) * float64(x) / w)
				pic.Data[(c*h+y)*w+x] = float32(px[c]) / 255
			}
			img.SetRGBA(x, y, color.RGBA{px[0], px[1], px[2], 255})
		}
	}
	boxes := [][4]float32{{10, 8, 50, 40}, {40, 20, 90, 60}, {2, 2, 20, 60}}
	ctx := context.Background()
	for _, views := range []Views{{}, {Scales: []float32{1.25}, Mirror: true}, {Scales: []float32{1, 1.5}, Mirror: true}} {
		got, err := e.EmbedUnshiftedViews(ctx, img, boxes, views)
		if err != nil {
			t.Fatal(err)
		}
		want, err := e.EmbedRegions(ctx, pic, boxes, views, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i := range boxes {
			if d, _ := testbundle.MaxAbsDiff(got[i], want[i]); d > 1e-5 {
				t.Errorf("views %+v, box %d: as an exemplar and as a region differ by %.3g", views, i, d)
			}
		}
	}
	// An exemplar is embedded at the encoder's own views (the manifest's crop
	// scales and mirror), and the other mirror setting embeds it differently.
	own, err := e.EmbedUnshifted(ctx, img, boxes)
	if err != nil {
		t.Fatal(err)
	}
	views := e.Views()
	if !slicesEqual(views.Scales, e.cfg.CropScales) || views.Mirror != e.cfg.Mirror {
		t.Fatalf("Views() = %+v, want the manifest's crop scales %v and mirror %v", views, e.cfg.CropScales, e.cfg.Mirror)
	}
	same, err := e.EmbedUnshiftedViews(ctx, img, boxes, views)
	if err != nil {
		t.Fatal(err)
	}
	views.Mirror = !views.Mirror
	other, err := e.EmbedUnshiftedViews(ctx, img, boxes, views)
	if err != nil {
		t.Fatal(err)
	}
	for i := range boxes {
		if d, _ := testbundle.MaxAbsDiff(own[i], same[i]); d != 0 {
			t.Errorf("box %d: EmbedUnshifted and the encoder's own views differ by %.3g", i, d)
		}
		if d, _ := testbundle.MaxAbsDiff(own[i], other[i]); d < 1e-4 {
			t.Errorf("box %d: mirroring changed its embedding by only %.3g", i, d)
		}
	}
}
