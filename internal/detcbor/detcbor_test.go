package detcbor

import (
	"errors"
	"testing"
)

type msg struct {
	A uint64 `cbor:"1,keyasint"`
	B []byte `cbor:"2,keyasint"`
}

func TestRoundTripAndStrictness(t *testing.T) {
	b, err := Marshal(msg{A: 5, B: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	var m msg
	if err := Unmarshal(b, &m, 100); err != nil || m.A != 5 {
		t.Fatalf("round trip: %+v %v", m, err)
	}
	for name, in := range map[string][]byte{
		"non-minimal integer": {0xa2, 0x01, 0x18, 0x05, 0x02, 0x41, 'x'},
		"unsorted keys":       {0xa2, 0x02, 0x41, 'x', 0x01, 0x05},
		"duplicate key":       {0xa2, 0x01, 0x05, 0x01, 0x06},
		"unknown field":       {0xa1, 0x03, 0x05},
		"indefinite length":   {0xbf, 0x01, 0x05, 0xff},
		"trailing bytes":      append(b, 0x00),
	} {
		if err := Unmarshal(in, &msg{}, 100); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if err := Unmarshal(b, &m, 2); !errors.Is(err, ErrTooLarge) {
		t.Errorf("size bound: %v", err)
	}
}

func FuzzUnmarshal(f *testing.F) {
	b, _ := Marshal(msg{A: 5, B: []byte("x")})
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var m msg
		if Unmarshal(data, &m, 1<<16) != nil {
			return
		}
		again, err := Marshal(m)
		if err != nil || string(again) != string(data) {
			t.Fatal("accepted input is not canonical")
		}
	})
}
