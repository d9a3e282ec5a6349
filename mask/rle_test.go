package mask

import (
	"encoding/json"
	"errors"
	"image"
	"os"
	"reflect"
	"testing"
)

type rleFixture struct {
	Synthetic []struct {
		Name   string   `json:"name"`
		Rows   []string `json:"rows"`
		Size   [2]int   `json:"size"`
		Counts string   `json:"counts"`
	} `json:"synthetic"`
	Heldout []struct {
		Size   [2]int `json:"size"`
		Counts string `json:"counts"`
		Area   int    `json:"area"`
	} `json:"heldout"`
}

func loadRLEFixture(t *testing.T) rleFixture {
	t.Helper()
	data, err := os.ReadFile("testdata/rle.json")
	if err != nil {
		t.Fatal(err)
	}
	var f rleFixture
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func fromRows(rows []string, w int) Mask {
	m := Mask{Width: w, Height: len(rows), Box: image.Rect(0, 0, w, len(rows)), Pix: make([]uint8, w*len(rows))}
	for y, r := range rows {
		for x := range w {
			if r[x] == '1' {
				m.Pix[y*w+x] = 1
			}
		}
	}
	return m
}

// The encodings the Python encoder of the training data (pycocotools'
// rleToString) wrote, mask by mask, from Go: equal strings, and back.
func TestEncodeRLEMatchesPython(t *testing.T) {
	f := loadRLEFixture(t)
	for _, c := range f.Synthetic {
		t.Run(c.Name, func(t *testing.T) {
			var m Mask
			if c.Rows != nil {
				m = fromRows(c.Rows, c.Size[1])
			} else { // long runs 300x400 (make_rle.py)
				m = Mask{Width: 400, Height: 300, Box: image.Rect(5, 10, 395, 290), Pix: make([]uint8, 390*280)}
				for y := 10; y < 290; y++ {
					for x := 5; x < 395; x++ {
						if !(y >= 100 && y < 120 && x >= 100 && x < 300) {
							m.Pix[(y-10)*390+x-5] = 1
						}
					}
				}
			}
			got := m.EncodeRLE()
			if got.Size != c.Size || got.Counts != c.Counts {
				t.Fatalf("encoded %v %q, Python %v %q", got.Size, got.Counts, c.Size, c.Counts)
			}
			back, err := DecodeRLE(got)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back.Dense(), m.Dense()) {
				t.Fatal("decode(encode(m)) != m")
			}
		})
	}
}

// Real held-out segmentations decode to their annotated area and encode back
// to the same string.
func TestRLERoundTripHeldOut(t *testing.T) {
	f := loadRLEFixture(t)
	if len(f.Heldout) == 0 {
		t.Fatal("no held-out segmentations in the fixture")
	}
	for i, c := range f.Heldout {
		m, err := DecodeRLE(RLE{Size: c.Size, Counts: c.Counts})
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if m.Area() != c.Area {
			t.Errorf("%d: area %d, annotated %d", i, m.Area(), c.Area)
		}
		if got := m.EncodeRLE(); got.Counts != c.Counts || got.Size != c.Size {
			t.Errorf("%d: re-encoded %q, was %q", i, got.Counts, c.Counts)
		}
	}
}

// A mask cropped to a box encodes as the same mask held densely.
func TestEncodeRLECroppedEqualsDense(t *testing.T) {
	m := Mask{Width: 9, Height: 7, Box: image.Rect(2, 1, 6, 5), Pix: []uint8{
		1, 1, 0, 1,
		0, 1, 1, 1,
		0, 0, 0, 1,
		1, 0, 0, 0}}
	dense := Mask{Width: 9, Height: 7, Box: image.Rect(0, 0, 9, 7), Pix: m.Dense()}
	if a, b := m.EncodeRLE(), dense.EncodeRLE(); a != b {
		t.Fatalf("cropped %q, dense %q", a.Counts, b.Counts)
	}
	if m.Area() != 8 || !m.At(2, 1) || m.At(0, 0) || m.At(3, 3) {
		t.Fatalf("area %d", m.Area())
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, r := range []RLE{
		{Size: [2]int{2, 2}, Counts: "3"},        // covers 3 of 4 pixels
		{Size: [2]int{2, 2}, Counts: "5"},        // covers 5
		{Size: [2]int{2, 2}, Counts: "0\x7f"},    // byte out of range
		{Size: [2]int{2, 2}, Counts: "P"},        // 0x20 set: a number that never ends
		{Size: [2]int{-1, 2}, Counts: ""},        // bad size
		{Size: [2]int{2, 2}, Counts: "0" + "O1"}, // negative run
	} {
		if _, err := DecodeRLE(r); !errors.Is(err, ErrRLE) {
			t.Errorf("%+v: err = %v, want ErrRLE", r, err)
		}
	}
}

func TestIoU(t *testing.T) {
	a := fromRows([]string{"1100", "1100", "0000"}, 4)
	b := fromRows([]string{"0110", "0110", "0000"}, 4)
	if got := IoU(&a, &b); got != 2.0/6 {
		t.Fatalf("IoU %v, want 1/3", got)
	}
	e := Mask{Width: 4, Height: 3}
	if got := IoU(&e, &e); got != 0 {
		t.Fatalf("IoU of empty masks %v", got)
	}
}
