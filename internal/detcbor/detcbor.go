// Package detcbor is medmesh's one CBOR dialect: core deterministic encoding
// (RFC 8949 §4.2.1) and strict decoding — size bounded before decoding,
// limits on nesting and lengths, no duplicate keys, indefinite lengths or
// tags, unknown fields refused — and every decode re-encodes and compares
// bytes, so non-canonical input is rejected. Hashes and signatures over
// encoded bytes therefore have exactly one preimage per value.
package detcbor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"

	"github.com/fxamacker/cbor/v2"
)

// ErrNotCanonical means the input decoded but is not the deterministic
// encoding of what it decodes to.
var ErrNotCanonical = errors.New("non-canonical CBOR")

// ErrTooLarge means the input exceeds the caller's size bound.
var ErrTooLarge = errors.New("CBOR input too large")

var (
	enc cbor.EncMode
	dec cbor.DecMode
)

func init() {
	var err error
	if enc, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	if dec, err = (cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:   8,
		MaxArrayElements:  65536,
		MaxMapPairs:       1024,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		UTF8:              cbor.UTF8RejectInvalid,
	}).DecMode(); err != nil {
		panic(err)
	}
}

// Marshal encodes v deterministically.
func Marshal(v any) ([]byte, error) { return enc.Marshal(v) }

// Unmarshal decodes data (at most max bytes) into v, a pointer, and rejects
// input that is not the canonical encoding of the decoded value.
func Unmarshal(data []byte, v any, max int) error {
	if len(data) > max {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), max)
	}
	if err := dec.Unmarshal(data, v); err != nil {
		return err
	}
	again, err := enc.Marshal(reflect.ValueOf(v).Elem().Interface())
	if err != nil {
		return err
	}
	if !bytes.Equal(again, data) {
		return ErrNotCanonical
	}
	return nil
}

// UnmarshalAgainst is Unmarshal with the canonical check made against
// reencode's bytes instead of Marshal's: reencode must return exactly what
// Marshal returns for the decoded value (a hand-written encoder, held to
// Marshal by its package's tests), called once v is decoded.
func UnmarshalAgainst(data []byte, v any, max int, reencode func() []byte) error {
	if len(data) > max {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), max)
	}
	if err := dec.Unmarshal(data, v); err != nil {
		return err
	}
	if !bytes.Equal(reencode(), data) {
		return ErrNotCanonical
	}
	return nil
}

// CBOR major types (shifted into a head's top three bits) and null, for
// the few encoders written by hand on hot paths (e2e envelopes, stored
// ops), whose bytes their tests hold to Marshal's.
const (
	MajorUint  = 0 << 5
	MajorNeg   = 1 << 5
	MajorBytes = 2 << 5
	MajorText  = 3 << 5
	MajorArray = 4 << 5
	MajorMap   = 5 << 5
	Null       = 0xf6
	True       = 0xf5
	False      = 0xf4
)

// AppendHead appends a CBOR head of major type major and argument n in
// its shortest form.
func AppendHead(b []byte, major byte, n uint64) []byte {
	switch {
	case n < 24:
		return append(b, major|byte(n))
	case n <= 0xff:
		return append(b, major|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, major|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, major|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, major|27), n)
}

// AppendBytes appends s as a byte string, or null when s is nil.
func AppendBytes(b, s []byte) []byte {
	if s == nil {
		return append(b, Null)
	}
	return append(AppendHead(b, MajorBytes, uint64(len(s))), s...)
}
