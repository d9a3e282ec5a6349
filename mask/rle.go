package mask

import (
	"errors"
	"fmt"
	"image"

	"github.com/vild/vild/detector"
)

// RLE is a COCO run-length encoding: the image's pixels in column-major
// order (down each column, columns left to right) as alternating run lengths
// starting with a run of zeros (possibly empty), the counts compressed as
// pycocotools' rleToString writes them.
type RLE = detector.RLE

// Runs are m's run lengths in COCO order (column-major, zeros first).
func (m *Mask) Runs() []int {
	var runs []int
	cur, n := uint8(0), 0
	emit := func(v uint8, k int) {
		if k == 0 {
			return
		}
		if v != cur {
			runs = append(runs, n)
			cur, n = v, 0
		}
		n += k
	}
	bw := m.Box.Dx()
	for x := range m.Width {
		if x < m.Box.Min.X || x >= m.Box.Max.X {
			emit(0, m.Height)
			continue
		}
		emit(0, m.Box.Min.Y)
		for y := m.Box.Min.Y; y < m.Box.Max.Y; y++ {
			emit(m.Pix[(y-m.Box.Min.Y)*bw+x-m.Box.Min.X], 1)
		}
		emit(0, m.Height-m.Box.Max.Y)
	}
	return append(runs, n)
}

// EncodeRLE is m's COCO RLE, as pycocotools.mask.encode.
func (m *Mask) EncodeRLE() RLE {
	return RLE{Size: [2]int{m.Height, m.Width}, Counts: CompressCounts(m.Runs())}
}

// CompressCounts is pycocotools' rleToString: each count (from the fourth on,
// less the count two before it) as little-endian 5-bit groups, a sixth bit
// marking that more follow, each group offset by 48 into printable ASCII.
func CompressCounts(counts []int) string {
	var s []byte
	for i, c := range counts {
		x := int64(c)
		if i > 2 {
			x -= int64(counts[i-2])
		}
		for more := true; more; {
			b := byte(x & 0x1f)
			x >>= 5
			if b&0x10 != 0 {
				more = x != -1
			} else {
				more = x != 0
			}
			if more {
				b |= 0x20
			}
			s = append(s, b+48)
		}
	}
	return string(s)
}

// ErrRLE is wrapped by every RLE decoding error.
var ErrRLE = errors.New("mask: invalid RLE")

// DecompressCounts is pycocotools' rleFrString.
func DecompressCounts(s string) ([]int, error) {
	var counts []int
	for p := 0; p < len(s); {
		var x int64
		k := 0
		for more := true; more; {
			if p >= len(s) {
				return nil, fmt.Errorf("%w: counts end inside a number", ErrRLE)
			}
			c := int64(s[p]) - 48
			if c < 0 || c > 63 || k > 12 {
				return nil, fmt.Errorf("%w: byte %q at %d", ErrRLE, s[p], p)
			}
			x |= (c & 0x1f) << (5 * k)
			more = c&0x20 != 0
			p++
			k++
			if !more && c&0x10 != 0 {
				x |= -1 << (5 * k)
			}
		}
		if len(counts) > 2 {
			x += int64(counts[len(counts)-2])
		}
		if x < 0 {
			return nil, fmt.Errorf("%w: negative run %d", ErrRLE, x)
		}
		counts = append(counts, int(x))
	}
	return counts, nil
}

// DecodeRLE is the mask an RLE describes; the counts must cover the image.
func DecodeRLE(r RLE) (Mask, error) {
	h, w := r.Size[0], r.Size[1]
	if h < 0 || w < 0 || h > 1<<15 || w > 1<<15 {
		return Mask{}, fmt.Errorf("%w: size %v", ErrRLE, r.Size)
	}
	counts, err := DecompressCounts(r.Counts)
	if err != nil {
		return Mask{}, err
	}
	total := 0
	for _, c := range counts {
		total += c
	}
	if total != h*w {
		return Mask{}, fmt.Errorf("%w: runs cover %d pixels of %d", ErrRLE, total, h*w)
	}
	m := Mask{Width: w, Height: h, Box: image.Rect(0, 0, w, h), Pix: make([]uint8, w*h)}
	i := 0
	for k, c := range counts {
		if k%2 == 1 {
			for j := i; j < i+c; j++ {
				m.Pix[(j%h)*w+j/h] = 1
			}
		}
		i += c
	}
	return m, nil
}

// IoU is the intersection over union of two masks of one image (0 when both
// are empty), as pycocotools' iou without crowd.
func IoU(a, b *Mask) float64 {
	inter, union := 0, 0
	r := a.Box.Union(b.Box)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			pa, pb := a.At(x, y), b.At(x, y)
			if pa && pb {
				inter++
			}
			if pa || pb {
				union++
			}
		}
	}
	if union == 0 {
		return 0
	}
	return float64(inter) / float64(union)
}
