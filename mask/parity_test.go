package mask

import (
	"context"
	"encoding/json"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/roialign"
)

// Tolerances (docs/bundle.md, "Golden outputs").
const (
	tolLogits      = 1e-4  // mask logits: Go RoIAlign of the golden features, then the graph under ONNX Runtime
	minPixelAgreed = 0.999 // pasted masks vs PyTorch's, over the whole image
)

type goldenMeta struct {
	Width         int     `json:"width"`
	Height        int     `json:"height"`
	ResizedWidth  int     `json:"resized_width"`
	ResizedHeight int     `json:"resized_height"`
	ScaleX        float64 `json:"scale_x"`
	ScaleY        float64 `json:"scale_y"`
}

// goldenFeatures reads a golden case's FPN features as RoIAlign pools them.
func goldenFeatures(t *testing.T, b *bundle.Bundle, dir string, meta goldenMeta) *Features {
	f := &Features{ScaleX: meta.ScaleX, ScaleY: meta.ScaleY, Width: meta.Width, Height: meta.Height}
	for _, l := range b.Manifest.RoILevels() {
		a := testbundle.Array(t, b, path.Join(dir, "feat_"+l.Name+".npy"))
		f.Levels = append(f.Levels, roialign.Feature{Data: a.F32, Channels: a.Shape[1], Height: a.Shape[2],
			Width: a.Shape[3], Scale: 1 / float32(l.Stride)})
	}
	return f
}

// unpackBits is np.unpackbits: the first n bits, high bit first.
func unpackBits(p []byte, n int) []uint8 {
	out := make([]uint8, n)
	for i := range out {
		out[i] = p[i/8] >> (7 - i%8) & 1
	}
	return out
}

// TestGoldenMaskParity checks every bundle with a mask head (the default one
// must have one) against the exporter's PyTorch numbers: the mask logits of
// Go's RoIAlign on the golden features through the graph under ONNX Runtime;
// then the pasted masks, from the golden logits (the paste alone) and from
// Go's logits (the chain), pixel by pixel.
func TestGoldenMaskParity(t *testing.T) {
	rt := testbundle.Runtime(t, ort.Config{})
	checked := 0
	for _, b := range testbundle.All(t) {
		if b.Manifest.MaskHead == nil {
			continue
		}
		t.Run(b.Manifest.Name, func(t *testing.T) {
			h, err := Open(b, rt, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			sec := b.Manifest.MaskHead
			if len(sec.Golden.Detections) == 0 {
				t.Fatal("the mask head has no golden cases")
			}
			for c, n := range sec.Golden.Detections {
				checked++
				t.Run(c, func(t *testing.T) { goldenMaskCase(t, b, h, path.Join(bundle.GoldenDir, c), n) })
			}
		})
	}
	if checked == 0 {
		t.Skip("no bundle with a mask head")
	}
}

func goldenMaskCase(t *testing.T, b *bundle.Bundle, h *Head, dir string, n int) {
	raw, err := b.ReadFile(path.Join(dir, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta goldenMeta
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	boxArr := testbundle.Array(t, b, path.Join(dir, "mask_boxes.npy"))
	wantLogits := testbundle.Array(t, b, path.Join(dir, "mask_logits.npy"))
	bits := testbundle.Array(t, b, path.Join(dir, "masks_bits.npy"))
	if len(boxArr.F32) != 4*n {
		t.Fatalf("mask_boxes.npy %v, manifest says %d detections", boxArr.Shape, n)
	}
	boxes := make([][4]float32, n)
	for i := range boxes {
		boxes[i] = [4]float32(boxArr.F32[4*i : 4*i+4])
	}
	f := goldenFeatures(t, b, dir, meta)

	logits, _, err := h.Logits(context.Background(), f, boxes)
	if err != nil {
		t.Fatal(err)
	}
	d, at := testbundle.MaxAbsDiff(logits, wantLogits.F32)
	t.Logf("mask logits: max |Go - PyTorch| %.2g (at %d)", d, at)
	if d > tolLogits {
		t.Errorf("mask logits differ by %.3g > %g", d, tolLogits)
	}

	hw := meta.Width * meta.Height
	want := unpackBits(bits.U8, n*hw)
	m := h.cfg.MaskSize
	agree := func(name string, probs []float32) {
		probs = append([]float32(nil), probs...)
		Sigmoid(probs)
		same, set := 0, 0
		for i, box := range boxes {
			got := Paste(probs[i*m*m:(i+1)*m*m], m, box, meta.Width, meta.Height, h.Threshold())
			dense := got.Dense()
			for j, v := range dense {
				if v == want[i*hw+j] {
					same++
				}
				set += int(want[i*hw+j])
			}
		}
		frac := float64(same) / float64(n*hw)
		t.Logf("%s: %d of %d pixels agree (%.5f; %d mask pixels in PyTorch's)", name, same, n*hw, frac, set)
		if frac < minPixelAgreed {
			t.Errorf("%s: pixel agreement %.5f < %g", name, frac, minPixelAgreed)
		}
		if set == 0 {
			t.Errorf("%s: PyTorch's masks are empty; the case tests nothing", name)
		}
	}
	agree("paste of the golden logits", wantLogits.F32)
	agree("Go logits, pasted", logits)
}

// The default bundle has a mask head: a bundle without one is tested by
// handlers (422 masks-unsupported).
func TestDefaultBundleHasMaskHead(t *testing.T) {
	for _, b := range testbundle.All(t) {
		if strings.HasSuffix(filepath.ToSlash(b.Source), "models/default") && b.Manifest.MaskHead == nil {
			t.Fatalf("%s has no mask head", b.Source)
		}
	}
}
