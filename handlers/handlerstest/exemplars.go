package handlerstest

import (
	"context"
	"fmt"
	"image"
	"image/color"

	"github.com/vild/vild/exemplar"
)

// ColorExemplars is ColorEmbedder that also embeds exemplars
// (vocabulary.ExemplarEmbedder): a box embeds as the mean colour of its
// pixels, the space ColorDetector's regions live in.
type ColorExemplars struct {
	ColorEmbedder
}

// Dim is the embedding dimension.
func (e *ColorExemplars) Dim() int { return Dim }

// EmbedExemplars returns one unit vector per box, checked as exemplar.CheckBox checks boxes.
func (e *ColorExemplars) EmbedExemplars(ctx context.Context, img image.Image, boxes [][4]float32) ([][]float32, error) {
	b := img.Bounds()
	out := make([][]float32, len(boxes))
	for i, box := range boxes {
		if err := exemplar.CheckBox(box, b.Dx(), b.Dy()); err != nil {
			return nil, err
		}
		var sum [3]float32
		n := 0
		for y := int(box[1]); y < int(box[3]); y++ {
			for x := int(box[0]); x < int(box[2]); x++ {
				c := color.NRGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
				sum[0] += float32(c.R) / 255
				sum[1] += float32(c.G) / 255
				sum[2] += float32(c.B) / 255
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("handlerstest: empty box")
		}
		out[i] = unit(sum[:])
	}
	return out, nil
}
