package imageio

import "image"

// RGBPlanes returns the pixels of r (in img's bounds-relative coordinates,
// clipped to the image) as [3, H, W] float32 planes in [0, 1], converted as
// Preprocess converts them (PIL's convert("RGB"), then x/255), unresized.
func RGBPlanes(img image.Image, r image.Rectangle) []float32 {
	b := img.Bounds()
	r = r.Intersect(image.Rect(0, 0, b.Dx(), b.Dy()))
	w, h := r.Dx(), r.Dy()
	out := make([]float32, 3*w*h)
	if w == 0 || h == 0 {
		return out
	}
	xs := make([]tap, w)
	for i := range xs {
		xs[i] = tap{i0: r.Min.X + i, i1: r.Min.X + i}
	}
	c := newRowCache(img, xs)
	plane := w * h
	for y := range h {
		row := c.get(r.Min.Y + y)
		for x := range w {
			sx := 3 * (r.Min.X + x)
			out[y*w+x] = row[sx]
			out[plane+y*w+x] = row[sx+1]
			out[2*plane+y*w+x] = row[sx+2]
		}
	}
	return out
}
