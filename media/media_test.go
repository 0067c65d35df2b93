package media

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"testing"
)

// jpegWithEXIF makes a JPEG carrying an APP1 EXIF segment with a GPS-like
// marker, as a phone camera would.
func jpegWithEXIF(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for x := range w {
		img.Set(x, x%h, color.RGBA{200, 30, 30, 255})
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	exif := append([]byte("Exif\x00\x00GPSLatitude 51.5072N GPSLongitude 0.1276W Camera-Serial-123"), make([]byte, 16)...)
	seg := append([]byte{0xFF, 0xE1, byte((len(exif) + 2) >> 8), byte(len(exif) + 2)}, exif...)
	return append(append(append([]byte{}, raw[:2]...), seg...), raw[2:]...)
}

func TestPrepareStripsMetadataAndScales(t *testing.T) {
	in := jpegWithEXIF(t, 4000, 3000)
	if !bytes.Contains(in, []byte("GPSLatitude")) {
		t.Fatal("test image lacks its EXIF")
	}
	full, thumb, err := Prepare(in)
	if err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string][]byte{"full": full, "thumb": thumb} {
		if bytes.Contains(out, []byte("GPS")) || bytes.Contains(out, []byte("Exif")) || bytes.Contains(out, []byte("Camera-Serial")) {
			t.Fatalf("%s keeps metadata", name)
		}
	}
	fc, _ := jpeg.DecodeConfig(bytes.NewReader(full))
	tc, _ := jpeg.DecodeConfig(bytes.NewReader(thumb))
	if fc.Width != FullSide || fc.Height != 1536 || tc.Width != ThumbSide {
		t.Fatalf("sizes %dx%d and %dx%d", fc.Width, fc.Height, tc.Width, tc.Height)
	}
}

func TestPrepareRejects(t *testing.T) {
	if _, _, err := Prepare([]byte("not an image")); !errors.Is(err, ErrNotImage) {
		t.Fatalf("garbage: %v", err)
	}
	if _, _, err := Prepare(make([]byte, MaxInput+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("huge: %v", err)
	}
}

func FuzzPrepare(f *testing.F) {
	var buf bytes.Buffer
	jpeg.Encode(&buf, image.NewRGBA(image.Rect(0, 0, 8, 8)), nil)
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		full, _, err := Prepare(data)
		if err == nil && len(full) == 0 {
			t.Fatal("empty image accepted")
		}
	})
}
