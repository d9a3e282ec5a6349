package rpn

import "math"

// CellAnchors are torchvision's zero-centred base anchors for one level:
// round([-w/2, -h/2, w/2, h/2]) with h = size·sqrt(r) and w = size/sqrt(r),
// ordered ratio-major, size-minor, computed in float32 as AnchorGenerator does.
func CellAnchors(sizes, aspectRatios []float32) [][4]float32 {
	out := make([][4]float32, 0, len(sizes)*len(aspectRatios))
	for _, r := range aspectRatios {
		hr := float32(math.Sqrt(float64(r)))
		wr := 1 / hr
		for _, s := range sizes {
			w := wr * s
			h := hr * s
			out = append(out, [4]float32{
				roundEven(-w / 2), roundEven(-h / 2), roundEven(w / 2), roundEven(h / 2),
			})
		}
	}
	return out
}

// roundEven is torch.round: half to even.
func roundEven(v float32) float32 { return float32(math.RoundToEven(float64(v))) }

// Strides are torchvision's anchor strides for a feature map of featH×featW on
// an input tensor of imageH×imageW (padded size): integer division per axis.
// They equal the level's nominal stride when the padded size is a multiple of
// it, and differ otherwise (a 352-pixel input and a 6-cell level give 58, not 64).
func Strides(featH, featW, imageH, imageW int) (strideY, strideX int) {
	return imageH / featH, imageW / featW
}

// Anchors are a level's anchors as torchvision's AnchorGenerator lays them out:
// the cell anchors shifted by (x·strideX, y·strideY), location-major (y, then x),
// anchor-minor.
func Anchors(cell [][4]float32, featH, featW, strideY, strideX int) [][4]float32 {
	out := make([][4]float32, 0, featH*featW*len(cell))
	for y := range featH {
		sy := float32(y * strideY)
		for x := range featW {
			sx := float32(x * strideX)
			for _, c := range cell {
				out = append(out, [4]float32{sx + c[0], sy + c[1], sx + c[2], sy + c[3]})
			}
		}
	}
	return out
}
