// Package annotate draws detections on a picture: a box and a "label score"
// tag per detection, in a colour that is stable per label. The server's
// annotated answers and `vild detect --out` use it.
package annotate

import (
	"fmt"
	"hash/fnv"
	"image"
	"image/color"
	"image/draw"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/vild/vild/detector"
)

// Draw draws detections (boxes and "label score" tags) on a copy of img.
func Draw(img image.Image, ds []detector.Detection) *image.RGBA {
	b := img.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(out, out.Bounds(), img, b.Min, draw.Src)
	thick := max(2, min(b.Dx(), b.Dy())/200)
	face := basicfont.Face7x13
	for _, d := range ds {
		c := LabelColor(d.Label)
		r := image.Rect(int(d.Box[0]), int(d.Box[1]), int(d.Box[2]), int(d.Box[3])).Intersect(out.Bounds())
		if r.Empty() {
			continue
		}
		for _, edge := range []image.Rectangle{
			{r.Min, image.Pt(r.Max.X, r.Min.Y+thick)}, {image.Pt(r.Min.X, r.Max.Y-thick), r.Max},
			{r.Min, image.Pt(r.Min.X+thick, r.Max.Y)}, {image.Pt(r.Max.X-thick, r.Min.Y), r.Max},
		} {
			draw.Draw(out, edge.Intersect(r), image.NewUniform(c), image.Point{}, draw.Src)
		}
		text := fmt.Sprintf("%s %.2f", d.Label, d.Score)
		tw := font.MeasureString(face, text).Ceil() + 4
		th := face.Metrics().Height.Ceil() + 2
		ty := r.Min.Y - th
		if ty < 0 {
			ty = r.Min.Y
		}
		tag := image.Rect(r.Min.X, ty, r.Min.X+tw, ty+th).Intersect(out.Bounds())
		draw.Draw(out, tag, image.NewUniform(c), image.Point{}, draw.Src)
		dr := font.Drawer{Dst: out, Src: image.NewUniform(textColor(c)), Face: face,
			Dot: fixed.P(tag.Min.X+2, tag.Min.Y+face.Metrics().Ascent.Ceil()+1)}
		dr.DrawString(text)
	}
	return out
}

// LabelColor is a stable, saturated colour per label.
func LabelColor(label string) color.RGBA {
	f := fnv.New32a()
	f.Write([]byte(label))
	hue := float64(f.Sum32()%360) / 60
	x := uint8(255 * (1 - abs(mod2(hue)-1)))
	switch int(hue) {
	case 0:
		return color.RGBA{255, x, 0, 255}
	case 1:
		return color.RGBA{x, 255, 0, 255}
	case 2:
		return color.RGBA{0, 255, x, 255}
	case 3:
		return color.RGBA{0, x, 255, 255}
	case 4:
		return color.RGBA{x, 0, 255, 255}
	default:
		return color.RGBA{255, 0, x, 255}
	}
}

func mod2(x float64) float64 { return x - 2*float64(int(x/2)) }

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func textColor(c color.RGBA) color.Color {
	if 299*int(c.R)+587*int(c.G)+114*int(c.B) > 128_000 {
		return color.Black
	}
	return color.White
}
