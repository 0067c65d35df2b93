package detcbor

import (
	"errors"
	"testing"
)

// TestReaderHead: every head length AppendHead writes reads back, and a
// reserved additional information, a cut head, a wrong major type and a
// count beyond its limit or the bytes left are errors that stick.
func TestReaderHead(t *testing.T) {
	for _, n := range []uint64{0, 23, 24, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1<<64 - 1} {
		r := NewReader(AppendHead(nil, MajorUint, n))
		if got := r.Head(MajorUint); got != n || r.Err() != nil || r.Len() != 0 {
			t.Errorf("head %d read as %d (%v, %d left)", n, got, r.Err(), r.Len())
		}
	}
	head := func(r *Reader) { r.Head(MajorUint) }
	bytes := func(r *Reader) { r.Bytes() }
	for _, c := range []struct {
		name string
		in   []byte
		read func(*Reader)
	}{
		{"reserved information", []byte{0x1c}, head},
		{"cut head", []byte{0x19, 0x01}, head},
		{"wrong major type", []byte{0x01}, bytes},
		{"count over limit", []byte{0x83, 0, 0, 0}, func(r *Reader) { r.Count(MajorArray, 2) }},
		{"count over bytes", []byte{0x83, 0}, func(r *Reader) { r.Count(MajorArray, 100) }},
		{"cut byte string", []byte{0x43, 'a'}, bytes},
	} {
		name := c.name
		r := NewReader(c.in)
		c.read(r)
		if !errors.Is(r.Err(), ErrMalformed) {
			t.Errorf("%s: %v", name, r.Err())
		}
		if r.Head(MajorUint) != 0 || r.Bytes() != nil || !errors.Is(r.Err(), ErrMalformed) {
			t.Errorf("%s: the error did not stick", name)
		}
	}
}
