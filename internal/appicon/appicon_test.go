package appicon

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"testing"
)

// TestPNG: each size encodes to a PNG that decodes to the drawing, with
// a white centre and green corners (full bleed, for maskable icons), the
// same bytes every time (go generate gives no spurious diff).
func TestPNG(t *testing.T) {
	for _, n := range Sizes {
		b, err := PNG(n)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := PNG(n)
		if !bytes.Equal(b, again) {
			t.Fatalf("%d px: two encodings differ", n)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%d px: %v", n, err)
		}
		if img.Bounds() != image.Rect(0, 0, n, n) {
			t.Fatalf("%d px: bounds %v", n, img.Bounds())
		}
		at := func(x, y int) color.NRGBA { return color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA) }
		if at(n/2, n/2) != White || at(0, 0) != Green || at(n-1, n-1) != Green || at(n/2, n/8) != Green {
			t.Fatalf("%d px: not the cross on green", n)
		}
	}
}
