package handlerstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // registered formats of Decoder
	_ "image/jpeg"
	_ "image/png"

	"github.com/vild/vild/imageio"
)

// Errors of Decoder: imageio's sentinels, which the server maps to problems.
var (
	ErrUnsupported = imageio.ErrUnsupportedFormat
	ErrTooLarge    = imageio.ErrTooLarge
	ErrCorrupt     = imageio.ErrCorrupt
)

// Decoder is a standard-library decoder with the same contract as the
// project's image package: formats by magic bytes (PNG, JPEG, GIF), size
// checked with DecodeConfig before Decode, first frame only, panics contained.
type Decoder struct {
	MaxSide, MaxPixels int
}

// supported are the formats Decoder takes, whatever else is registered.
var supported = map[string]bool{"png": true, "jpeg": true, "gif": true}

// Decode decodes data.
func (d Decoder) Decode(ctx context.Context, data []byte) (img image.Image, err error) {
	defer func() {
		if v := recover(); v != nil {
			img, err = nil, fmt.Errorf("%w: decoder panic: %v", ErrCorrupt, v)
		}
	}()
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if errors.Is(err, image.ErrFormat) || !supported[format] {
		return nil, ErrUnsupported // other packages in the binary may register more formats (BMP, TIFF)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > d.MaxSide || cfg.Height > d.MaxSide || cfg.Width*cfg.Height > d.MaxPixels {
		return nil, ErrTooLarge
	}
	img, _, err = image.Decode(bytes.NewReader(data)) // image/gif's Decode reads the first frame only
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return img, nil
}
