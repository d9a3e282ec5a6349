// Package annotate draws detections on a picture: a box and a "label score"
// tag per detection, in a colour that is stable per label, and its instance
// mask when it has one (an RLE tinted in, polygons outlined). The server's
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
	"github.com/vild/vild/mask"
)

// maskAlpha is the weight of the label colour over a mask's pixels.
const maskAlpha = 0.45

// Draw draws detections (boxes and "label score" tags) on a copy of img.
func Draw(img image.Image, ds []detector.Detection) *image.RGBA {
	b := img.Bounds()
	out := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(out, out.Bounds(), img, b.Min, draw.Src)
	thick := max(2, min(b.Dx(), b.Dy())/200)
	face := basicfont.Face7x13
	for _, d := range ds {
		drawMask(out, d, LabelColor(d.Label))
	}
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

// drawMask tints d's RLE mask into out, or outlines its polygons.
func drawMask(out *image.RGBA, d detector.Detection, c color.RGBA) {
	if d.Mask != nil {
		m, err := mask.DecodeRLE(*d.Mask)
		if err != nil || m.Width != out.Rect.Dx() || m.Height != out.Rect.Dy() {
			return
		}
		blend := func(v, w uint8) uint8 { return uint8(float64(v)*(1-maskAlpha) + float64(w)*maskAlpha + 0.5) }
		for i, v := range m.Pix {
			if v == 0 {
				continue
			}
			p := out.Pix[out.PixOffset(i%m.Width, i/m.Width):]
			p[0], p[1], p[2] = blend(p[0], c.R), blend(p[1], c.G), blend(p[2], c.B)
		}
	}
	for _, poly := range d.Polygons {
		n := len(poly) / 2
		for i := range n {
			j := (i + 1) % n
			x0, y0, x1, y1 := int(poly[2*i]), int(poly[2*i+1]), int(poly[2*j]), int(poly[2*j+1])
			// contours run along pixel edges: horizontal or vertical segments
			r := image.Rect(min(x0, x1), min(y0, y1), max(x0, x1)+1, max(y0, y1)+1)
			draw.Draw(out, r.Intersect(out.Bounds()), image.NewUniform(c), image.Point{}, draw.Src)
		}
	}
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
