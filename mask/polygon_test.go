package mask

import (
	"image"
	"reflect"
	"testing"
)

// shoelace is a polygon's area (positive when clockwise on screen).
func shoelace(p []float32) float64 {
	a := 0.0
	n := len(p) / 2
	for i := range n {
		j := (i + 1) % n
		a += float64(p[2*i])*float64(p[2*j+1]) - float64(p[2*j])*float64(p[2*i+1])
	}
	return a / 2
}

// inside is the even-odd rule at (x, y).
func inside(p []float32, x, y float64) bool {
	in := false
	n := len(p) / 2
	for i := range n {
		j := (i + n - 1) % n
		xi, yi, xj, yj := float64(p[2*i]), float64(p[2*i+1]), float64(p[2*j]), float64(p[2*j+1])
		if (yi > y) != (yj > y) && x < (xj-xi)*(y-yi)/(yj-yi)+xi {
			in = !in
		}
	}
	return in
}

func TestPolygonsOfPixels(t *testing.T) {
	one := Mask{Width: 5, Height: 4, Box: image.Rect(2, 1, 3, 2), Pix: []uint8{1}}
	if got, want := one.Polygons(), [][]float32{{3, 1, 3, 2, 2, 2, 2, 1}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("one pixel: %v, want %v", got, want)
	}
	// Two pixels touching at a corner are two components (4-connectivity).
	diag := fromRows([]string{"10", "01"}, 2)
	if got := diag.Polygons(); len(got) != 2 || shoelace(got[0]) != 1 || shoelace(got[1]) != 1 {
		t.Fatalf("diagonal: %v", got)
	}
	// An L: six corners, area 3.
	l := fromRows([]string{"10", "11"}, 2)
	if got := l.Polygons(); len(got) != 1 || len(got[0]) != 12 || shoelace(got[0]) != 3 {
		t.Fatalf("L: %v", got)
	}
	if got := (&Mask{Width: 3, Height: 3}).Polygons(); got != nil {
		t.Fatalf("empty mask: %v", got)
	}
}

// A hole-free shape's contour encloses exactly its pixels (pixel centres by
// the even-odd rule) and its area is the pixel count.
func TestPolygonsEncloseTheMask(t *testing.T) {
	f := loadRLEFixture(t)
	for _, c := range f.Synthetic {
		if c.Name != "disc 50x70" {
			continue
		}
		m := fromRows(c.Rows, c.Size[1])
		polys := m.Polygons()
		if len(polys) != 1 {
			t.Fatalf("disc: %d polygons", len(polys))
		}
		if a := shoelace(polys[0]); int(a) != m.Area() {
			t.Fatalf("polygon area %v, mask area %d", a, m.Area())
		}
		for y := range m.Height {
			for x := range m.Width {
				if inside(polys[0], float64(x)+0.5, float64(y)+0.5) != m.At(x, y) {
					t.Fatalf("pixel (%d, %d): inside %v, mask %v", x, y, !m.At(x, y), m.At(x, y))
				}
			}
		}
		return
	}
	t.Fatal("no disc in the fixture")
}

// Every component of a random mask gets one clockwise polygon; the areas add
// up to at least the mask's (holes are not cut out).
func TestPolygonsOfRandomMask(t *testing.T) {
	f := loadRLEFixture(t)
	for _, c := range f.Synthetic {
		if c.Rows == nil || c.Name == "empty 2x3" {
			continue
		}
		m := fromRows(c.Rows, c.Size[1])
		total := 0.0
		for _, p := range m.Polygons() {
			a := shoelace(p)
			if a <= 0 || len(p) < 8 || len(p)%2 != 0 {
				t.Fatalf("%s: polygon %v (area %v)", c.Name, p, a)
			}
			total += a
		}
		if int(total) < m.Area() {
			t.Errorf("%s: polygons cover %v, the mask %d pixels", c.Name, total, m.Area())
		}
	}
}
