// Package imageio turns untrusted image bytes into the detector's input tensor.
//
// Decode accepts JPEG, PNG, GIF and WebP only, recognised by their magic bytes
// (never by a declared content type), reads the header with the format's
// DecodeConfig and refuses oversized dimensions (and JPEGs with more scans than
// any encoder writes) before any pixel is decoded, decodes only the first
// frame of an animation, turns decoder panics into errors and applies a JPEG's
// EXIF orientation. Its sentinel errors map to
// HTTP statuses: ErrUnsupportedFormat → 415, ErrTooLarge → 422, ErrCorrupt → 400.
//
// Preprocess implements docs/bundle.md's input rules (resize the longer side to
// max_side, scale to [0,1], normalise, zero-pad to size_divisible) with the
// exporter's exact resampling: bilinear, half-pixel centres, no antialiasing,
// in float32 (PyTorch's F.interpolate(mode="bilinear", align_corners=False)).
package imageio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/draw"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"

	"golang.org/x/image/webp"
)

// Format names an accepted image format.
type Format string

// The accepted formats.
const (
	JPEG Format = "jpeg"
	PNG  Format = "png"
	GIF  Format = "gif"
	WebP Format = "webp"
)

// Limits bound what Decode accepts. Zero fields take the defaults.
type Limits struct {
	MaxSide   int   // largest accepted width or height
	MaxPixels int64 // largest accepted width × height
	// MaxJPEGScans caps the scans of a progressive JPEG. Each scan makes the
	// decoder walk the whole image, and a scan can be a few bytes: a 132 KB
	// file of 16.7 megapixels and 1,010 scans took 60 s to decode here.
	// Encoders write at most about a dozen.
	MaxJPEGScans int
}

// DefaultLimits are docs' defaults: sides up to 16,384 pixels, 40 megapixels,
// and 64 JPEG scans.
var DefaultLimits = Limits{MaxSide: 16384, MaxPixels: 40_000_000, MaxJPEGScans: 64}

func (l Limits) withDefaults() Limits {
	if l.MaxSide <= 0 {
		l.MaxSide = DefaultLimits.MaxSide
	}
	if l.MaxPixels <= 0 {
		l.MaxPixels = DefaultLimits.MaxPixels
	}
	if l.MaxJPEGScans <= 0 {
		l.MaxJPEGScans = DefaultLimits.MaxJPEGScans
	}
	return l
}

// Errors returned by Decode; they wrap the underlying cause where there is one.
var (
	ErrUnsupportedFormat = errors.New("imageio: unsupported image format")
	ErrTooLarge          = errors.New("imageio: image dimensions exceed the limits")
	ErrCorrupt           = errors.New("imageio: corrupt image")
)

// Image is a decoded image with EXIF orientation applied.
type Image struct {
	image.Image
	Format      Format
	Orientation int // EXIF orientation that was applied, 1 (none) to 8
}

// Sniff recognises the format from the first bytes of data.
func Sniff(data []byte) (Format, error) {
	switch {
	case bytes.HasPrefix(data, []byte("\xff\xd8\xff")):
		return JPEG, nil
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		return PNG, nil
	case bytes.HasPrefix(data, []byte("GIF87a")), bytes.HasPrefix(data, []byte("GIF89a")):
		return GIF, nil
	case len(data) >= 12 && string(data[:4]) == "RIFF" && string(data[8:12]) == "WEBP":
		return WebP, nil
	}
	return "", ErrUnsupportedFormat
}

// Config checks data's format and header against lim without decoding pixels.
// Width and height are those stored in the file (before EXIF orientation).
func Config(data []byte, lim Limits) (image.Config, Format, error) {
	format, err := Sniff(data)
	if err != nil {
		return image.Config{}, "", err
	}
	cfg, err := guard(format, "decode header", func() (image.Config, error) {
		return decodeConfig(format, bytes.NewReader(data))
	})
	if err != nil {
		return image.Config{}, format, err
	}
	lim = lim.withDefaults()
	switch {
	case cfg.Width <= 0 || cfg.Height <= 0:
		return cfg, format, fmt.Errorf("imageio: %s is %dx%d: %w", format, cfg.Width, cfg.Height, ErrCorrupt)
	case cfg.Width > lim.MaxSide || cfg.Height > lim.MaxSide,
		int64(cfg.Width)*int64(cfg.Height) > lim.MaxPixels:
		return cfg, format, fmt.Errorf("imageio: %s is %dx%d, limits are %d per side and %d pixels: %w",
			format, cfg.Width, cfg.Height, lim.MaxSide, lim.MaxPixels, ErrTooLarge)
	}
	if format == JPEG {
		if n := JPEGScans(data); n > lim.MaxJPEGScans {
			return cfg, format, fmt.Errorf("imageio: jpeg has %d scans, the limit is %d: %w", n, lim.MaxJPEGScans, ErrTooLarge)
		}
	}
	return cfg, format, nil
}

// Decode checks data with Config, then decodes it (the first frame of a GIF)
// and applies a JPEG's EXIF orientation.
func Decode(data []byte, lim Limits) (*Image, error) {
	cfg, format, err := Config(data, lim)
	if err != nil {
		return nil, err
	}
	img, err := guard(format, "decode", func() (image.Image, error) {
		return decode(format, bytes.NewReader(data))
	})
	if err != nil {
		return nil, err
	}
	if format == GIF && img.Bounds() != image.Rect(0, 0, cfg.Width, cfg.Height) {
		// A first frame smaller than the logical screen (the decoder checks
		// that it lies inside) is placed on a transparent screen-sized canvas.
		canvas := image.NewNRGBA(image.Rect(0, 0, cfg.Width, cfg.Height))
		draw.Draw(canvas, img.Bounds(), img, img.Bounds().Min, draw.Src)
		img = canvas
	}
	if b := img.Bounds(); b.Dx() != cfg.Width || b.Dy() != cfg.Height {
		return nil, fmt.Errorf("imageio: %s header says %dx%d, pixels are %dx%d: %w",
			format, cfg.Width, cfg.Height, b.Dx(), b.Dy(), ErrCorrupt)
	}
	orientation := 1
	if format == JPEG {
		orientation = JPEGOrientation(data)
		img = Orient(img, orientation)
	}
	return &Image{Image: img, Format: format, Orientation: orientation}, nil
}

// Decoder decodes untrusted images with fixed limits (the server's decoder).
type Decoder struct{ Limits Limits }

// Decode is Decode with d's limits, returning the oriented picture.
func (d Decoder) Decode(ctx context.Context, data []byte) (image.Image, error) {
	img, err := Decode(data, d.Limits)
	if err != nil {
		return nil, err
	}
	return img.Image, nil
}

func decodeConfig(f Format, r io.Reader) (image.Config, error) {
	switch f {
	case JPEG:
		return jpeg.DecodeConfig(r)
	case PNG:
		return png.DecodeConfig(r)
	case GIF:
		return gif.DecodeConfig(r)
	default:
		return webp.DecodeConfig(r)
	}
}

func decode(f Format, r io.Reader) (image.Image, error) {
	switch f {
	case JPEG:
		return jpeg.Decode(r)
	case PNG:
		return png.Decode(r)
	case GIF:
		return gif.Decode(r) // the first frame only
	default:
		return webp.Decode(r)
	}
}

// guard runs a decoder step, turning errors and panics into ErrCorrupt.
func guard[T any](f Format, op string, fn func() (T, error)) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			var zero T
			v, err = zero, fmt.Errorf("imageio: %s %s: decoder panic: %v: %w", op, f, p, ErrCorrupt)
		}
	}()
	v, err = fn()
	if err != nil {
		var zero T
		return zero, fmt.Errorf("imageio: %s %s: %w: %w", op, f, ErrCorrupt, err)
	}
	return v, nil
}
