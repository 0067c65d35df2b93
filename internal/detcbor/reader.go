package detcbor

import (
	"errors"
	"fmt"
	"math"
)

// ErrMalformed means the input is not the CBOR a Reader's caller expects.
var ErrMalformed = errors.New("malformed CBOR")

// Reader reads the heads and byte strings of definite-length CBOR, for
// decoders written by hand. It takes any head length and leaves the check
// that the input is canonical to its caller, which re-encodes what it read
// with its own encoder (held to Marshal by its tests) and compares bytes,
// as UnmarshalAgainst does. The first error sticks: after it every read
// returns zero values and Err reports it.
type Reader struct {
	b   []byte
	err error
}

// NewReader reads b.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

// Err is the first error met, if any.
func (r *Reader) Err() error { return r.err }

// Len is how many bytes are left to read.
func (r *Reader) Len() int { return len(r.b) }

func (r *Reader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, a...)...)
		r.b = nil
	}
}

// Head reads a head of major type major and returns its argument.
func (r *Reader) Head(major byte) uint64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail("input ends before a head")
		return 0
	}
	ib := r.b[0]
	if ib&0xe0 != major {
		r.fail("major type %d, want %d", ib>>5, major>>5)
		return 0
	}
	info, rest := ib&0x1f, r.b[1:]
	if info < 24 {
		r.b = rest
		return uint64(info)
	}
	if info > 27 {
		r.fail("additional information %d", info)
		return 0
	}
	size := 1 << (info - 24) // the argument's bytes: 1, 2, 4 or 8
	if len(rest) < size {
		r.fail("input ends inside a head")
		return 0
	}
	var n uint64
	for _, c := range rest[:size] {
		n = n<<8 | uint64(c)
	}
	r.b = rest[size:]
	return n
}

// Count reads a head of major type major (an array or a map) whose count
// is at most limit, and no more than the bytes left could hold (one byte
// per item at least), so that a caller may size a slice by it.
func (r *Reader) Count(major byte, limit int) int {
	n := r.Head(major)
	if r.err == nil && (n > uint64(limit) || n > uint64(len(r.b))) {
		r.fail("%d items, limit %d, %d bytes left", n, limit, len(r.b))
		return 0
	}
	return int(n)
}

// Bytes reads a byte string; the result points into the input.
func (r *Reader) Bytes() []byte {
	n := r.Head(MajorBytes)
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail("byte string of %d bytes, %d left", n, len(r.b))
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

// Null reads a null if one comes next and reports whether it did.
func (r *Reader) Null() bool {
	if r.err != nil || len(r.b) == 0 || r.b[0] != Null {
		return false
	}
	r.b = r.b[1:]
	return true
}

// Bool reads true or false.
func (r *Reader) Bool() bool {
	if r.err != nil {
		return false
	}
	if len(r.b) == 0 || (r.b[0] != True && r.b[0] != False) {
		r.fail("want true or false")
		return false
	}
	v := r.b[0] == True
	r.b = r.b[1:]
	return v
}

// Uint reads an unsigned integer of at most max.
func (r *Reader) Uint(max uint64) uint64 {
	n := r.Head(MajorUint)
	if r.err == nil && n > max {
		r.fail("integer %d, at most %d", n, max)
		return 0
	}
	return n
}

// Int reads a signed integer that fits an int64.
func (r *Reader) Int() int64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail("input ends before an integer")
		return 0
	}
	if r.b[0]&0xe0 == MajorNeg {
		n := r.Head(MajorNeg)
		if r.err == nil && n > math.MaxInt64 {
			r.fail("integer -1-%d overflows", n)
			return 0
		}
		return -1 - int64(n)
	}
	return int64(r.Uint(math.MaxInt64))
}
