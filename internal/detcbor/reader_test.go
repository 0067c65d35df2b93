package detcbor

import (
	"errors"
	"math"
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

// TestReaderScalars: integers of either sign, booleans and null read back
// as Marshal writes them, and out-of-range integers and wrong simple
// values are errors.
func TestReaderScalars(t *testing.T) {
	for _, n := range []int64{0, 1, -1, 23, -24, -25, 1 << 40, -1 << 40, math.MaxInt64, math.MinInt64} {
		b, _ := Marshal(n)
		r := NewReader(b)
		if got := r.Int(); got != n || r.Err() != nil || r.Len() != 0 {
			t.Errorf("int %d read as %d (%v)", n, got, r.Err())
		}
	}
	for _, v := range []bool{false, true} {
		b, _ := Marshal(v)
		if got := NewReader(b).Bool(); got != v {
			t.Errorf("bool %v read as %v", v, got)
		}
	}
	r := NewReader([]byte{Null, 0x01})
	if !r.Null() || r.Null() || r.Uint(1) != 1 || r.Err() != nil {
		t.Errorf("null then 1: %v", r.Err())
	}
	for name, read := range map[string]func(*Reader){
		"negative overflow": func(r *Reader) { r.Int() },
		"uint over max":     func(r *Reader) { r.Uint(1 << 62) },
		"not a bool":        func(r *Reader) { r.Bool() },
	} {
		in := []byte{0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0} // -1 - 2^63
		if name == "uint over max" {
			in = []byte{0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0}
		}
		if name == "not a bool" {
			in = []byte{Null}
		}
		r := NewReader(in)
		read(r)
		if !errors.Is(r.Err(), ErrMalformed) {
			t.Errorf("%s: %v", name, r.Err())
		}
	}
}
