package mesh

import (
	"bytes"
	"fmt"
	"math"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// A frame is encoded by hand: a fetch answer carries up to fetchBatch
// envelopes (megabytes), and the reflective encoder grew its buffer by
// doubling and, on the other side, re-encoded the whole frame again to
// check it was canonical — several copies of every envelope, the garbage
// of which, on a machine where a fresh page costs microseconds, was a
// third of a returning device's ingest. The bytes are exactly detcbor's
// (core deterministic CBOR of frame, as TestAppendFrameMatchesDetcbor and
// FuzzAppendFrame check): keys in order, empty fields left out (omitempty),
// a nil element of a list as null.

// frameLen bounds the length of f's encoding.
func frameLen(f *frame) int {
	n := 1 + 13*(1+9) // map head, keys and heads of every field
	lists := [][][]byte{f.Tags, f.IDs, f.Envs, f.FPs, f.Hand, f.Only}
	for _, l := range lists {
		for _, b := range l {
			n += 9 + len(b)
		}
	}
	return n + len(f.Tag) + len(f.Msg) + 9*len(f.Copies)
}

// appendFrame appends f's wire form to b.
func appendFrame(b []byte, f *frame) []byte {
	fields := uint64(1) // Kind is always there
	for _, present := range []bool{len(f.Tags) > 0, len(f.Tag) > 0, len(f.Msg) > 0, len(f.IDs) > 0, len(f.Envs) > 0,
		f.More, len(f.FPs) > 0, f.Carry, len(f.Hand) > 0, len(f.Copies) > 0, len(f.Only) > 0, f.Urgent} {
		if present {
			fields++
		}
	}
	b = detcbor.AppendHead(b, detcbor.MajorMap, fields)
	b = detcbor.AppendHead(append(b, 1), detcbor.MajorUint, uint64(f.Kind))
	b = appendList(b, 2, f.Tags)
	b = appendField(b, 3, f.Tag)
	b = appendField(b, 4, f.Msg)
	b = appendList(b, 5, f.IDs)
	b = appendList(b, 6, f.Envs)
	b = appendTrue(b, 7, f.More)
	b = appendList(b, 8, f.FPs)
	b = appendTrue(b, 9, f.Carry)
	b = appendList(b, 10, f.Hand)
	if len(f.Copies) > 0 {
		b = detcbor.AppendHead(append(b, 11), detcbor.MajorArray, uint64(len(f.Copies)))
		for _, c := range f.Copies {
			b = detcbor.AppendHead(b, detcbor.MajorUint, uint64(c))
		}
	}
	b = appendList(b, 13, f.Only)
	return appendTrue(b, 14, f.Urgent)
}

// appendField appends key and s unless s is empty.
func appendField(b []byte, key byte, s []byte) []byte {
	if len(s) == 0 {
		return b
	}
	return detcbor.AppendBytes(append(b, key), s)
}

// appendList appends key and l unless l is empty.
func appendList(b []byte, key byte, l [][]byte) []byte {
	if len(l) == 0 {
		return b
	}
	b = detcbor.AppendHead(append(b, key), detcbor.MajorArray, uint64(len(l)))
	for _, s := range l {
		b = detcbor.AppendBytes(b, s)
	}
	return b
}

// appendTrue appends key and true if v.
func appendTrue(b []byte, key byte, v bool) []byte {
	if !v {
		return b
	}
	return append(b, key, detcbor.True)
}

// readFrame reads a frame's fields from b by hand (detcbor.Reader), each
// byte string a copy: the buffer b was read into goes back to its pool,
// and an envelope kept must not pin a whole frame. The canonical form and
// the rest of the shapes are decodeFrame's to check
// (FuzzDecodeFrameMatchesDetcbor, TestDecodeFrameRefusesCheaply).
func readFrame(b []byte) (frame, error) {
	var f frame
	r := detcbor.NewReader(b)
	one := func() []byte {
		if r.Null() {
			return nil
		}
		return bytes.Clone(r.Bytes())
	}
	// Each list is read up to the most any frame may hold of it (check
	// refuses more anyway), so that a frame refused costs no more than its
	// size to read.
	list := func(limit int) [][]byte {
		l := make([][]byte, r.Count(detcbor.MajorArray, limit))
		for i := range l {
			l[i] = one()
		}
		return l
	}
	last := uint64(0)
	for n := r.Count(detcbor.MajorMap, 14); n > 0 && r.Err() == nil; n-- {
		key := r.Uint(math.MaxUint8)
		if r.Err() == nil && key <= last { // canonical keys ascend: no repeats
			return frame{}, fmt.Errorf("field %d after field %d", key, last)
		}
		last = key
		switch key {
		case 1:
			f.Kind = uint8(r.Uint(math.MaxUint8))
		case 2:
			f.Tags = list(offerPage)
		case 3:
			f.Tag = one()
		case 4:
			f.Msg = one()
		case 5:
			f.IDs = list(fetchBatch)
		case 6:
			f.Envs = list(fetchBatch)
		case 7:
			f.More = r.Bool()
		case 8:
			f.FPs = list(offerPage)
		case 9:
			f.Carry = r.Bool()
		case 10:
			f.Hand = list(maxHand)
		case 11:
			f.Copies = make([]uint32, r.Count(detcbor.MajorArray, maxHand))
			for i := range f.Copies {
				f.Copies[i] = uint32(r.Uint(math.MaxUint32))
			}
		case 13:
			f.Only = list(offerPage)
		case 14:
			f.Urgent = r.Bool()
		default:
			if r.Err() == nil {
				return frame{}, fmt.Errorf("unknown field %d", key)
			}
		}
	}
	if r.Err() == nil && r.Len() != 0 {
		return frame{}, fmt.Errorf("%d bytes after the frame", r.Len())
	}
	return f, r.Err()
}
