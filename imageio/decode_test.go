package imageio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"os"
	"runtime"
	"testing"
)

func read(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestDecodeFormats(t *testing.T) {
	for _, tc := range []struct {
		file   string
		format Format
		w, h   int
	}{
		{"rgb.png", PNG, 53, 37},
		{"rgba.png", PNG, 30, 41},
		{"gray.png", PNG, 20, 15},
		{"photo.jpg", JPEG, 64, 48},
		{"lossless.webp", WebP, 28, 20},
		{"two_frames.gif", GIF, 16, 12},
		{"frames1000.gif", GIF, 1, 1},
		{"orient6.jpg", JPEG, 16, 24}, // rotated: width and height swap
		{"progressive.jpg", JPEG, 256, 256},
	} {
		t.Run(tc.file, func(t *testing.T) {
			img, err := Decode(read(t, tc.file), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if img.Format != tc.format {
				t.Errorf("format %q, want %q", img.Format, tc.format)
			}
			if b := img.Bounds(); b.Dx() != tc.w || b.Dy() != tc.h {
				t.Errorf("size %dx%d, want %dx%d", b.Dx(), b.Dy(), tc.w, tc.h)
			}
		})
	}
}

// pngHeader is a PNG signature and an IHDR chunk claiming w×h (no pixels).
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2
	binary.Write(&b, binary.BigEndian, uint32(13))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

func TestDecodeErrors(t *testing.T) {
	rgb := read(t, "rgb.png")
	jpg := read(t, "photo.jpg")
	webp := read(t, "lossless.webp")
	gif := read(t, "two_frames.gif")
	corruptJPEG := append([]byte(nil), jpg...)
	for i := 200; i < len(corruptJPEG)-2; i++ {
		corruptJPEG[i] = 0xff
	}
	for _, tc := range []struct {
		name string
		data []byte
		lim  Limits
		want error
	}{
		{"empty", nil, Limits{}, ErrUnsupportedFormat},
		{"bmp", []byte("BM\x36\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00"), Limits{}, ErrUnsupportedFormat},
		{"tiff", []byte("II*\x00\x08\x00\x00\x00"), Limits{}, ErrUnsupportedFormat},
		{"svg", []byte(`<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>`), Limits{}, ErrUnsupportedFormat},
		{"html", []byte("<!DOCTYPE html><html></html>"), Limits{}, ErrUnsupportedFormat},
		{"riff but not webp", []byte("RIFF\x10\x00\x00\x00WAVEfmt "), Limits{}, ErrUnsupportedFormat},
		{"png claiming 100000x100000", read(t, "bomb.png"), Limits{}, ErrTooLarge},
		{"png side over the limit", pngHeader(16385, 10), Limits{}, ErrTooLarge},
		{"png pixels over the limit", pngHeader(8000, 5001), Limits{}, ErrTooLarge},
		{"png at the limits", pngHeader(16384, 2441), Limits{}, ErrCorrupt}, // passes the check, has no pixels
		{"zero width png", pngHeader(0, 10), Limits{}, ErrCorrupt},
		{"custom side limit", rgb, Limits{MaxSide: 52}, ErrTooLarge},
		{"custom pixel limit", rgb, Limits{MaxPixels: 53*37 - 1}, ErrTooLarge},
		{"truncated png header", rgb[:20], Limits{}, ErrCorrupt},
		{"truncated png pixels", rgb[:len(rgb)/2], Limits{}, ErrCorrupt},
		{"truncated jpeg", jpg[:len(jpg)/2], Limits{}, ErrCorrupt},
		{"corrupt jpeg", corruptJPEG, Limits{}, ErrCorrupt},
		{"truncated webp", webp[:len(webp)/2], Limits{}, ErrCorrupt},
		{"truncated gif", gif[:40], Limits{}, ErrCorrupt},
		{"signature only", []byte("\x89PNG\r\n\x1a\n"), Limits{}, ErrCorrupt},
		{"jpeg with 310 scans", read(t, "many_scans.jpg"), Limits{}, ErrTooLarge},
		{"progressive jpeg over a custom scan limit", read(t, "progressive.jpg"), Limits{MaxJPEGScans: 9}, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := Decode(tc.data, tc.lim)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if img != nil {
				t.Fatalf("an image came back with the error")
			}
		})
	}
	// At the limits exactly, a real image passes.
	if _, err := Decode(rgb, Limits{MaxSide: 53, MaxPixels: 53 * 37}); err != nil {
		t.Fatalf("image at the limits: %v", err)
	}
}

// allocated returns the bytes allocated while running fn.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestHostileHeadersAllocateLittle(t *testing.T) {
	for _, tc := range []struct {
		file    string
		wantErr error
	}{
		{"bomb.png", ErrTooLarge}, // refused from the header: 30 GB of pixels never allocated
		{"frames1000.gif", nil},   // only the first frame is decoded
	} {
		data := read(t, tc.file)
		var err error
		n := allocated(func() { _, err = Decode(data, Limits{}) })
		if !errors.Is(err, tc.wantErr) {
			t.Fatalf("%s: err = %v, want %v", tc.file, err, tc.wantErr)
		}
		if n > 256<<10 {
			t.Errorf("%s: decoding allocated %d bytes", tc.file, n)
		}
	}
}

func TestFirstFrameOnly(t *testing.T) {
	img, err := Decode(read(t, "two_frames.gif"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	// The frames are grey 40 and 200 (quantised by the palette).
	if r, _, _, _ := img.At(3, 3).RGBA(); r>>8 > 100 {
		t.Fatalf("pixel red = %d: not the first frame", r>>8)
	}
}

func TestGIFFrameSmallerThanScreen(t *testing.T) {
	pal := color.Palette{color.NRGBA{0, 0, 0, 255}, color.NRGBA{250, 10, 10, 255}}
	frame := image.NewPaletted(image.Rect(1, 1, 3, 3), pal)
	for i := range frame.Pix {
		frame.Pix[i] = 1
	}
	var buf bytes.Buffer
	err := gif.EncodeAll(&buf, &gif.GIF{Image: []*image.Paletted{frame}, Delay: []int{0},
		Config: image.Config{ColorModel: pal, Width: 4, Height: 5}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := Decode(buf.Bytes(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds() != image.Rect(0, 0, 4, 5) {
		t.Fatalf("bounds %v, want the 4x5 screen", img.Bounds())
	}
	if r, _, _, a := img.At(2, 2).RGBA(); r>>8 != 250 || a>>8 != 255 {
		t.Fatalf("inside the frame: r=%d a=%d", r>>8, a>>8)
	}
	if _, _, _, a := img.At(0, 4).RGBA(); a != 0 {
		t.Fatalf("outside the frame: alpha %d, want transparent", a)
	}
}

// crafted builds a JPEG prefix with an APP1 EXIF segment holding tiff.
func crafted(tiff []byte) []byte {
	seg := append([]byte("Exif\x00\x00"), tiff...)
	out := []byte{0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x00, 0x00, 0xff, 0xe1}
	out = binary.BigEndian.AppendUint16(out, uint16(len(seg)+2))
	return append(out, seg...)
}

func tiffWith(bo binary.ByteOrder, tag, typ uint16, count uint32, value uint16) []byte {
	t := make([]byte, 8+2+12+4)
	if bo == binary.LittleEndian {
		copy(t, "II")
	} else {
		copy(t, "MM")
	}
	bo.PutUint16(t[2:], 42)
	bo.PutUint32(t[4:], 8)
	bo.PutUint16(t[8:], 1)
	bo.PutUint16(t[10:], tag)
	bo.PutUint16(t[12:], typ)
	bo.PutUint32(t[14:], count)
	bo.PutUint16(t[18:], value)
	return t
}

func TestJPEGScans(t *testing.T) {
	for _, tc := range []struct {
		file string
		want int
	}{
		{"photo.jpg", 1},
		{"progressive.jpg", 10},
		{"many_scans.jpg", 310},
		{"rgb.png", 0},
	} {
		t.Run(tc.file, func(t *testing.T) {
			if got := JPEGScans(read(t, tc.file)); got != tc.want {
				t.Fatalf("%d scans, want %d", got, tc.want)
			}
		})
	}
	// Truncations never panic and never count more than the whole file.
	data := read(t, "progressive.jpg")
	for n := range len(data) {
		if got := JPEGScans(data[:n]); got > 10 {
			t.Fatalf("prefix %d: %d scans", n, got)
		}
	}
}

func TestJPEGOrientation(t *testing.T) {
	le, be := binary.LittleEndian, binary.BigEndian
	for _, tc := range []struct {
		name string
		data []byte
		want int
	}{
		{"little endian 6", crafted(tiffWith(le, 0x0112, 3, 1, 6)), 6},
		{"big endian 8", crafted(tiffWith(be, 0x0112, 3, 1, 8)), 8},
		{"value out of range", crafted(tiffWith(le, 0x0112, 3, 1, 9)), 1},
		{"wrong type", crafted(tiffWith(le, 0x0112, 4, 1, 6)), 1},
		{"other tag", crafted(tiffWith(le, 0x0110, 3, 1, 6)), 1},
		{"truncated tiff", crafted(tiffWith(le, 0x0112, 3, 1, 6)[:15]), 1},
		{"ifd offset past the end", crafted([]byte("II*\x00\xff\xff\xff\x7f")), 1},
		{"bad byte order", crafted([]byte("XX*\x00\x08\x00\x00\x00\x00\x00")), 1},
		{"segment length past the end", []byte{0xff, 0xd8, 0xff, 0xe1, 0xff, 0xff, 'E'}, 1},
		{"no exif", read(t, "photo.jpg"), 1},
		{"not a jpeg", read(t, "rgb.png"), 1},
		{"pil orientation 3", read(t, "orient3.jpg"), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := JPEGOrientation(tc.data); got != tc.want {
				t.Fatalf("orientation %d, want %d", got, tc.want)
			}
		})
	}
}

func TestOrientMatchesPIL(t *testing.T) {
	g := loadGolden(t)
	for _, tc := range g.Orientation {
		t.Run(tc.File, func(t *testing.T) {
			img, err := Decode(read(t, tc.File), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if img.Orientation != tc.Orientation {
				t.Fatalf("orientation %d, want %d", img.Orientation, tc.Orientation)
			}
			if b := img.Bounds(); b.Dx() != tc.Width || b.Dy() != tc.Height {
				t.Fatalf("size %dx%d, PIL %dx%d", b.Dx(), b.Dy(), tc.Width, tc.Height)
			}
			// Go's and libjpeg's decoders differ by a few levels; the quadrant
			// colours are far apart.
			for _, p := range tc.Points {
				r, g, b, _ := img.At(p[0]+img.Bounds().Min.X, p[1]+img.Bounds().Min.Y).RGBA()
				got := [3]int{int(r >> 8), int(g >> 8), int(b >> 8)}
				for c := range 3 {
					if d := got[c] - p[2+c]; d > 12 || d < -12 {
						t.Fatalf("pixel (%d,%d) = %v, PIL %v", p[0], p[1], got, p[2:])
					}
				}
			}
		})
	}
}

func TestOrientGeometry(t *testing.T) {
	// A 3x2 image with distinct pixels; each orientation's mapping checked on
	// the top-left source pixel.
	src := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	for i := range src.Pix {
		src.Pix[i] = uint8(i)
	}
	tl := src.NRGBAAt(0, 0)
	for _, tc := range []struct {
		o          int
		w, h, x, y int // expected size and where the top-left pixel lands
	}{
		{1, 3, 2, 0, 0}, {2, 3, 2, 2, 0}, {3, 3, 2, 2, 1}, {4, 3, 2, 0, 1},
		{5, 2, 3, 0, 0}, {6, 2, 3, 1, 0}, {7, 2, 3, 1, 2}, {8, 2, 3, 0, 2},
	} {
		out := Orient(src, tc.o)
		if b := out.Bounds(); b.Dx() != tc.w || b.Dy() != tc.h {
			t.Fatalf("orientation %d: size %v", tc.o, b)
		}
		if got := out.At(tc.x, tc.y); got != tl {
			t.Fatalf("orientation %d: pixel at (%d,%d) = %v, want %v", tc.o, tc.x, tc.y, got, tl)
		}
	}
}

// FuzzDecode: no input panics, and whatever decodes respects the limits.
func FuzzDecode(f *testing.F) {
	for _, name := range []string{"rgb.png", "rgba.png", "gray.png", "photo.jpg", "lossless.webp",
		"two_frames.gif", "frames1000.gif", "bomb.png", "orient6.jpg", "progressive.jpg", "many_scans.jpg"} {
		data := read(f, name)
		f.Add(data)
		f.Add(data[:len(data)/2]) // truncated
		f.Add(data[:min(len(data), 40)])
	}
	f.Add(pngHeader(100000, 100000))
	f.Add(crafted(tiffWith(binary.LittleEndian, 0x0112, 3, 1, 6)))
	lim := Limits{MaxSide: 2048, MaxPixels: 1 << 20}
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := Decode(data, lim)
		if err != nil {
			if !errors.Is(err, ErrUnsupportedFormat) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			return
		}
		b := img.Bounds()
		if b.Dx() <= 0 || b.Dy() <= 0 || b.Dx() > lim.MaxSide || b.Dy() > lim.MaxSide || int64(b.Dx())*int64(b.Dy()) > lim.MaxPixels {
			t.Fatalf("decoded %v beyond the limits", b)
		}
	})
}

// FuzzJPEGScans: the scan counter never panics and counts at most one scan
// per SOS marker present.
func FuzzJPEGScans(f *testing.F) {
	f.Add(read(f, "progressive.jpg"))
	f.Add(read(f, "photo.jpg"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if n := JPEGScans(data); n < 0 || n > bytes.Count(data, []byte{0xff, 0xda}) {
			t.Fatalf("%d scans", n)
		}
	})
}

// FuzzJPEGOrientation: the EXIF parser never panics and answers 1–8.
func FuzzJPEGOrientation(f *testing.F) {
	f.Add(read(f, "orient6.jpg"))
	f.Add(crafted(tiffWith(binary.BigEndian, 0x0112, 3, 1, 8)))
	f.Add([]byte{0xff, 0xd8, 0xff, 0xe1, 0x00, 0x08, 'E', 'x', 'i', 'f', 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if o := JPEGOrientation(data); o < 1 || o > 8 {
			t.Fatalf("orientation %d", o)
		}
	})
}
