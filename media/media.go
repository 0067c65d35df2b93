// Package media prepares photos for a conversation: it decodes the image a
// camera or gallery produced and encodes it afresh, so nothing but pixels
// survives — no EXIF, no GPS, no maker notes, no embedded thumbnails — and
// makes the thumbnail shown in the chat. It never writes to disk.
package media

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // decoders for what phones and PCs send
	"image/jpeg"
	_ "image/png"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp"
)

// Limits.
const (
	MaxInput    = 25 << 20 // bytes accepted from the camera or file picker
	MaxPixels   = 50_000_000
	FullSide    = 2048 // longest side of the stored image
	ThumbSide   = 320
	jpegQuality = 85
)

// Errors.
var (
	ErrNotImage = errors.New("not a supported image (JPEG, PNG, GIF or WebP)")
	ErrTooLarge = errors.New("image too large")
)

// Prepare re-encodes an image without its metadata and returns the stored
// image and its thumbnail, both JPEG.
func Prepare(data []byte) (full, thumb []byte, err error) {
	if len(data) > MaxInput {
		return nil, nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(data), MaxInput)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, nil, ErrNotImage
	}
	if cfg.Width*cfg.Height > MaxPixels || cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, nil, fmt.Errorf("%w: %dx%d pixels", ErrTooLarge, cfg.Width, cfg.Height)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, nil, ErrNotImage
	}
	if full, err = encode(img, FullSide); err != nil {
		return nil, nil, err
	}
	if thumb, err = encode(img, ThumbSide); err != nil {
		return nil, nil, err
	}
	return full, thumb, nil
}

// encode scales img to fit side×side (never up) and writes a fresh JPEG.
func encode(img image.Image, side int) ([]byte, error) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w > side || h > side {
		if w >= h {
			w, h = side, max(1, h*side/w)
		} else {
			w, h = max(1, w*side/h), side
		}
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.CatmullRom.Scale(dst, dst.Bounds(), img, b, draw.Src, nil)
	var out bytes.Buffer
	if err := jpeg.Encode(&out, dst, &jpeg.Options{Quality: jpegQuality}); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
