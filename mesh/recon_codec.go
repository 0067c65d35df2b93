package mesh

import (
	"bytes"
	"fmt"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// A reconciliation message is encoded and decoded by hand: every sync
// session of a busy conversation exchanges a few of them, each hundreds of
// ranges, and the reflective codec was a third of the time a session spent
// in Reply. The bytes are exactly detcbor's for reconMsg (core
// deterministic CBOR: keys in order, empty fields left out, a nil listed
// ID as null), as TestReconCodecMatchesDetcbor and FuzzDecodeRecon check;
// the decoder takes only what re-encodes to the very bytes it read.

// reconLen bounds the length of the encoding of rs.
func reconLen(rs []rng) int {
	n := 1 + 1 + 9 // map head, key, array head
	for i := range rs {
		r := &rs[i]
		n += 1 + 5*(1+9) + len(r.Bound) + len(r.FP) + 9*len(r.Keys)
		for _, id := range r.IDs {
			n += 9 + len(id)
		}
	}
	return n
}

// appendRecon appends the encoding of reconMsg{Ranges: rs} to b.
func appendRecon(b []byte, rs []rng) []byte {
	b = append(b, detcbor.MajorMap|1, 1)
	b = detcbor.AppendHead(b, detcbor.MajorArray, uint64(len(rs)))
	for i := range rs {
		r := &rs[i]
		fields := uint64(1) // Mode is always there
		for _, present := range [...]bool{len(r.Bound) > 0, len(r.FP) > 0, len(r.IDs) > 0, len(r.Keys) > 0} {
			if present {
				fields++
			}
		}
		b = detcbor.AppendHead(b, detcbor.MajorMap, fields)
		b = appendField(b, 1, r.Bound)
		b = detcbor.AppendHead(append(b, 2), detcbor.MajorUint, uint64(r.Mode))
		b = appendField(b, 3, r.FP)
		b = appendList(b, 4, r.IDs)
		if len(r.Keys) > 0 {
			b = detcbor.AppendHead(append(b, 5), detcbor.MajorArray, uint64(len(r.Keys)))
			for _, k := range r.Keys {
				b = detcbor.AppendHead(b, detcbor.MajorUint, k)
			}
		}
	}
	return b
}

// decodeRecon decodes a reconciliation message of at most MaxMsgBytes,
// of at most maxRanges ranges, each listing at most maxListedIDs IDs of
// 32 bytes, and refuses any that is not canonical. Byte strings in the
// result point into msg.
func decodeRecon(msg []byte) ([]rng, error) {
	if len(msg) > MaxMsgBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", detcbor.ErrTooLarge, len(msg), MaxMsgBytes)
	}
	r := detcbor.NewReader(msg)
	if r.Count(detcbor.MajorMap, 1) != 1 || r.Head(detcbor.MajorUint) != 1 {
		if r.Err() != nil {
			return nil, r.Err()
		}
		return nil, fmt.Errorf("%w: not a reconciliation message", detcbor.ErrMalformed)
	}
	rs := make([]rng, r.Count(detcbor.MajorArray, maxRanges))
	for i := range rs {
		fields := r.Count(detcbor.MajorMap, 5)
		for range fields {
			switch key := r.Head(detcbor.MajorUint); key {
			case 1:
				rs[i].Bound = r.Bytes()
			case 2:
				m := r.Head(detcbor.MajorUint)
				if m > 0xff {
					return nil, fmt.Errorf("%w: range mode %d", detcbor.ErrMalformed, m)
				}
				rs[i].Mode = uint8(m)
			case 3:
				rs[i].FP = r.Bytes()
			case 4:
				// A listed ID is an op ID: 32 bytes, 33 with its head.
				ids := make([][]byte, r.Count(detcbor.MajorArray, min(maxListedIDs, r.Len()/(1+len(crdt.OpID{})))))
				for j := range ids {
					if ids[j] = r.Bytes(); r.Err() == nil && len(ids[j]) != len(crdt.OpID{}) {
						return nil, fmt.Errorf("%w: a listed ID of %d bytes", detcbor.ErrMalformed, len(ids[j]))
					}
				}
				rs[i].IDs = ids
			case 5:
				keys := make([]uint64, r.Count(detcbor.MajorArray, maxListedIDs))
				for j := range keys {
					keys[j] = r.Head(detcbor.MajorUint)
				}
				rs[i].Keys = keys
			default:
				if r.Err() == nil {
					return nil, fmt.Errorf("%w: unknown range field %d", detcbor.ErrMalformed, key)
				}
			}
			if r.Err() != nil {
				return nil, r.Err()
			}
		}
	}
	if r.Err() != nil {
		return nil, r.Err()
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the message", detcbor.ErrMalformed, r.Len())
	}
	scratch := reencodeBufs.Get().(*[]byte)
	defer reencodeBufs.Put(scratch)
	*scratch = appendRecon((*scratch)[:0], rs)
	if !bytes.Equal(*scratch, msg) {
		return nil, detcbor.ErrNotCanonical
	}
	return rs, nil
}
