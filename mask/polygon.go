package mask

// Polygons are the outer contours of m's 4-connected components, one polygon
// each (x1, y1, x2, y2, … in image pixels, as COCO's polygon segmentation),
// components in scan order (top to bottom, left to right, by their first
// pixel). A contour runs along the pixel edges between the component and the
// background, clockwise on screen, with a vertex at each pixel corner where it
// turns (so every vertex is an integer corner, and the polygon's area is the
// component's pixel count plus any holes, which are not cut out). Where two
// pixels of the component touch only at a corner the contour turns towards
// the component, keeping 4-connected pixels together.
func (m *Mask) Polygons() [][]float32 {
	w, h := m.Box.Dx(), m.Box.Dy()
	if w == 0 || h == 0 {
		return nil
	}
	fg := func(x, y int) bool { return x >= 0 && y >= 0 && x < w && y < h && m.Pix[y*w+x] != 0 }
	label := make([]int32, w*h)
	var out [][]float32
	var stack []int
	next := int32(0)
	for start, v := range m.Pix {
		if v == 0 || label[start] != 0 {
			continue
		}
		next++
		label[start] = next
		stack = append(stack[:0], start)
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			x, y := i%w, i/w
			for _, d := range [4][2]int{{1, 0}, {-1, 0}, {0, 1}, {0, -1}} {
				nx, ny := x+d[0], y+d[1]
				if fg(nx, ny) && label[ny*w+nx] == 0 {
					label[ny*w+nx] = next
					stack = append(stack, ny*w+nx)
				}
			}
		}
		out = append(out, m.trace(start%w, start/w, fg))
	}
	return out
}

// dirs are the four headings in clockwise order on screen: right, down,
// left, up.
var dirs = [4][2]int{{1, 0}, {0, 1}, {-1, 0}, {0, -1}}

// edge reports whether the pixel edge from corner (vx, vy) along heading d has
// the component on its right (on screen) and background on its left.
func edge(vx, vy, d int, fg func(x, y int) bool) bool {
	var r, l [2]int
	switch d {
	case 0: // right: below on the right
		r, l = [2]int{vx, vy}, [2]int{vx, vy - 1}
	case 1: // down
		r, l = [2]int{vx - 1, vy}, [2]int{vx, vy}
	case 2: // left
		r, l = [2]int{vx - 1, vy - 1}, [2]int{vx - 1, vy}
	default: // up
		r, l = [2]int{vx, vy - 1}, [2]int{vx - 1, vy - 1}
	}
	return fg(r[0], r[1]) && !fg(l[0], l[1])
}

// trace follows the outer contour of the component whose first pixel in scan
// order is (x0, y0), from that pixel's top-left corner heading right.
func (m *Mask) trace(x0, y0 int, fg func(x, y int) bool) []float32 {
	ox, oy := float32(m.Box.Min.X), float32(m.Box.Min.Y)
	var poly []float32
	vx, vy, d := x0, y0, 0
	limit := 4 * (m.Box.Dx() + 1) * (m.Box.Dy() + 1)
	for step := 0; step < limit; step++ {
		vx, vy = vx+dirs[d][0], vy+dirs[d][1]
		nd := d
		for _, turn := range [3]int{1, 0, 3} { // right, straight, left
			if c := (d + turn) % 4; edge(vx, vy, c, fg) {
				nd = c
				break
			}
		}
		if nd != d {
			poly = append(poly, ox+float32(vx), oy+float32(vy))
		}
		d = nd
		if vx == x0 && vy == y0 && d == 0 {
			break
		}
	}
	return poly
}
