package annotate

import (
	"image"
	"image/color"
	"testing"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/mask"
)

func grey(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = 128
	}
	return img
}

// A detection's RLE mask is tinted in its label's colour inside the mask and
// nowhere else; polygons are outlined.
func TestDrawMasks(t *testing.T) {
	m := mask.Mask{Width: 80, Height: 60, Box: image.Rect(30, 30, 50, 50), Pix: make([]uint8, 400)}
	for i := range m.Pix {
		m.Pix[i] = 1
	}
	rle := m.EncodeRLE()
	d := detector.Detection{Label: "tomato", Score: 0.9, Box: [4]float32{25, 25, 70, 55}, Mask: &rle}
	out := Draw(grey(80, 60), []detector.Detection{d})
	c := LabelColor("tomato")
	in := out.RGBAAt(40, 40)
	want := func(v uint8) uint8 { return uint8(128*(1-maskAlpha) + float64(v)*maskAlpha + 0.5) }
	if in != (color.RGBA{want(c.R), want(c.G), want(c.B), 128}) {
		t.Fatalf("mask pixel %v, want the blend of grey and %v", in, c)
	}
	if got := out.RGBAAt(60, 40); got != (color.RGBA{128, 128, 128, 128}) {
		t.Fatalf("outside the mask %v", got)
	}
	d.Mask, d.Polygons = nil, m.Polygons()
	out = Draw(grey(80, 60), []detector.Detection{d})
	if out.RGBAAt(30, 40) != c || out.RGBAAt(40, 40) != (color.RGBA{128, 128, 128, 128}) {
		t.Fatalf("polygon: edge %v, inside %v", out.RGBAAt(30, 40), out.RGBAAt(40, 40))
	}
}
