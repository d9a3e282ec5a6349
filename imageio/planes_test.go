package imageio

import (
	"image"
	"image/color"
	"testing"
)

func TestRGBPlanes(t *testing.T) {
	img := image.NewNRGBA(image.Rect(10, 20, 14, 23)) // 4x3, bounds not at the origin
	for y := 20; y < 23; y++ {
		for x := 10; x < 14; x++ {
			img.SetNRGBA(x, y, color.NRGBA{uint8(10 * x), uint8(y), 255, 128})
		}
	}
	got := RGBPlanes(img, image.Rect(1, 1, 9, 2)) // clipped to columns 1..3 of row 1
	want := []float32{110. / 255, 120. / 255, 130. / 255, 21. / 255, 21. / 255, 21. / 255, 1, 1, 1}
	if len(got) != len(want) {
		t.Fatalf("%d values, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("value %d = %v, want %v (all %v)", i, got[i], want[i], got)
		}
	}
	if n := len(RGBPlanes(img, image.Rect(5, 5, 9, 9))); n != 0 {
		t.Errorf("outside the image: %d values", n)
	}
	// every image type reads as the generic conversion does
	ycc := image.NewYCbCr(image.Rect(0, 0, 3, 2), image.YCbCrSubsampleRatio420)
	for i := range ycc.Y {
		ycc.Y[i] = uint8(40 * i)
	}
	p := RGBPlanes(ycc, ycc.Bounds())
	for y := range 2 {
		for x := range 3 {
			r, g, b, _ := color.NRGBAModel.Convert(ycc.At(x, y)).(color.NRGBA).RGBA()
			for c, v := range []uint32{r >> 8, g >> 8, b >> 8} {
				if p[c*6+y*3+x] != float32(v)/255 {
					t.Fatalf("YCbCr (%d,%d) channel %d = %v, want %v", x, y, c, p[c*6+y*3+x], float32(v)/255)
				}
			}
		}
	}
}
