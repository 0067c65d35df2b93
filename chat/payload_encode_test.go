package chat

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// TestMarshalPayloadMatchesDetcbor: the hand-encoded shapes give the
// reflective encoder's bytes exactly, and every other field — each payload
// field set in turn, so a field added later is caught — falls back to it.
func TestMarshalPayloadMatchesDetcbor(t *testing.T) {
	same := func(p *payload) {
		t.Helper()
		want, err := detcbor.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := marshalPayload(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("payload %+v:\n got %x\nwant %x", p, got, want)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		p := &payload{Kind: uint8(r.IntN(256)), Urgent: r.IntN(2) == 0}
		switch n := r.IntN(5); n {
		case 0: // empty
		case 1:
			p.Text = string(randomBytes(r, r.IntN(24))) // any bytes, valid UTF-8 or not
		default:
			p.Text = string(randomBytes(r, r.IntN(1<<uint(4*n))))
		}
		switch r.IntN(3) {
		case 0:
			p.Target = randomBytes(r, 32)
		case 1:
			p.Target = []byte{} // empty: omitted, as nil is
		}
		same(p)
	}
	v := reflect.ValueOf(&payload{}).Elem()
	for i := range v.NumField() {
		p := &payload{Kind: kindText, Text: "hello"}
		f := reflect.ValueOf(p).Elem().Field(i)
		setNonZero(t, f, r)
		if name := v.Type().Field(i).Name; p.onlyMessage() != (name == "Kind" || name == "Text" || name == "Target" || name == "Urgent") {
			t.Errorf("field %s: onlyMessage %v", name, p.onlyMessage())
		}
		same(p)
	}
}

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// setNonZero gives f some value other than its zero value.
func setNonZero(t *testing.T, f reflect.Value, r *rand.Rand) {
	t.Helper()
	switch f.Kind() {
	case reflect.Bool:
		f.SetBool(true)
	case reflect.Uint8, reflect.Uint32, reflect.Uint64:
		f.SetUint(1 + r.Uint64N(200))
	case reflect.Int64:
		f.SetInt(1 + r.Int64N(1<<40))
	case reflect.String:
		f.SetString("x")
	case reflect.Slice:
		if f.Type().Elem().Kind() == reflect.Uint8 {
			f.SetBytes(randomBytes(r, 32))
		} else {
			f.Set(reflect.ValueOf([][]byte{randomBytes(r, 32)}))
		}
	case reflect.Pointer:
		f.Set(reflect.New(f.Type().Elem()))
	default:
		t.Fatalf("field of kind %s: teach setNonZero", f.Kind())
	}
}
