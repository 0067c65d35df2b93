// Package appicon draws the web app's icon — a white cross on the app's
// green, inside the safe zone of a maskable icon — at any size, so the
// PNGs under web/app are generated (go generate ./web), not hand-made,
// and a test can check the committed files against this drawing.
//
// It has no I/O but PNG encoding into memory, and is deterministic: the
// same size always gives the same bytes.
package appicon

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
)

// Colours of the icon: the app's theme green and white.
var (
	Green = color.NRGBA{R: 0x07, G: 0x5e, B: 0x54, A: 0xff}
	White = color.NRGBA{R: 0xff, G: 0xff, B: 0xff, A: 0xff}
)

// Sizes are the icon sizes the manifest lists.
var Sizes = []int{192, 512}

// Draw returns the icon at size×size pixels: a full-bleed green square
// (a maskable icon is cropped by the launcher, so no transparent corners)
// with a white cross whose arms span the middle half, well inside the
// central 80 % safe zone.
func Draw(size int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, size, size))
	arm0, arm1 := size/4, size-size/4       // the cross spans the middle half
	bar0, bar1 := size*5/12, size-size*5/12 // each bar is a sixth thick
	for y := range size {
		for x := range size {
			c := Green
			if (x >= bar0 && x < bar1 && y >= arm0 && y < arm1) || (y >= bar0 && y < bar1 && x >= arm0 && x < arm1) {
				c = White
			}
			img.SetNRGBA(x, y, c)
		}
	}
	return img
}

// PNG encodes Draw(size) as a PNG.
func PNG(size int) ([]byte, error) {
	var b bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&b, Draw(size)); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
