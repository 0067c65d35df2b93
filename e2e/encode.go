package e2e

// A hand-written encoder of the envelope's deterministic CBOR, for the
// bytes signed and the associated data: these are computed for every
// envelope received (verify, then open), and the reflective encoder cost
// several times the hashing of them. It produces exactly what
// detcbor.Marshal does for an Envelope (core deterministic encoding:
// shortest heads, keys 1–11 in order, Epoch omitted when empty, a nil
// byte string or array as null) — TestAppendMatchesDetcbor and FuzzDecode
// hold it to that.

// CBOR major types.
const (
	majUint  = 0 << 5
	majNeg   = 1 << 5
	majBytes = 2 << 5
	majArray = 4 << 5
	majMap   = 5 << 5
	cborNull = 0xf6
)

// appendHead appends a CBOR head of major type maj and argument v in its
// shortest form.
func appendHead(b []byte, maj byte, v uint64) []byte {
	switch {
	case v < 24:
		return append(b, maj|byte(v))
	case v <= 0xff:
		return append(b, maj|24, byte(v))
	case v <= 0xffff:
		return append(b, maj|25, byte(v>>8), byte(v))
	case v <= 0xffffffff:
		return append(b, maj|26, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	default:
		return append(b, maj|27, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
}

func appendBytes(b, v []byte) []byte {
	if v == nil {
		return append(b, cborNull)
	}
	return append(appendHead(b, majBytes, uint64(len(v))), v...)
}

func appendInt(b []byte, v int64) []byte {
	if v < 0 {
		return appendHead(b, majNeg, uint64(-1-v))
	}
	return appendHead(b, majUint, uint64(v))
}

// appendEnvelope appends the encoding of e with body and sig in place of
// e.Body and e.Sig (nil: encoded as null, as the signed bytes and the
// header have them).
func (e *Envelope) appendEnvelope(b, body, sig []byte) []byte {
	n := uint64(11)
	if len(e.Epoch) == 0 {
		n--
	}
	b = appendHead(b, majMap, n)
	b = appendHead(append(b, 1), majUint, uint64(e.Version))
	b = appendHead(append(b, 2), majUint, uint64(e.Kind))
	b = appendBytes(append(b, 3), e.Tag)
	b = appendBytes(append(b, 4), e.Sender)
	if len(e.Epoch) != 0 {
		b = appendBytes(append(b, 5), e.Epoch)
	}
	b = appendHead(append(b, 6), majUint, uint64(e.Index))
	b = append(b, 7)
	if e.Deps == nil {
		b = append(b, cborNull)
	} else {
		b = appendHead(b, majArray, uint64(len(e.Deps)))
		for _, d := range e.Deps {
			b = appendBytes(b, d)
		}
	}
	b = appendBytes(append(b, 8), body)
	b = appendBytes(append(b, 9), sig)
	b = appendInt(append(b, 10), e.Wall)
	return appendHead(append(b, 11), majUint, uint64(e.Logical))
}

// encodedSize bounds the encoding of e (heads of at most 9 bytes).
func (e *Envelope) encodedSize() int {
	n := 16*9 + len(e.Tag) + len(e.Sender) + len(e.Epoch) + len(e.Body) + len(e.Sig)
	for _, d := range e.Deps {
		n += 9 + len(d)
	}
	return n
}
