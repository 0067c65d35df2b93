package keywrap

import (
	"bytes"
	"errors"
	"testing"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// fast keeps tests quick; the format carries the parameters.
var fast = Params{Time: 1, MemoryKiB: 64, Threads: 1}

func TestRoundTrip(t *testing.T) {
	secret := []byte("thirty-two bytes of secret key!!")
	box, err := Seal([]byte("pass"), secret, "device", fast)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(box, secret) {
		t.Fatal("sealed form contains the secret")
	}
	got, err := Open([]byte("pass"), box, "device")
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open = %q, %v", got, err)
	}
}

func TestOpenErrors(t *testing.T) {
	box, err := Seal([]byte("pass"), []byte("secret"), "device", fast)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(box)
	tampered[len(tampered)-1] ^= 1
	for _, tc := range []struct {
		name  string
		pass  string
		data  []byte
		label string
		want  error
	}{
		{"wrong passphrase", "nope", box, "device", ErrWrongPassphrase},
		{"wrong label", "pass", box, "ca", ErrWrongPassphrase},
		{"tampered", "pass", tampered, "device", ErrWrongPassphrase},
		{"empty passphrase", "", box, "device", ErrEmptyPassphrase},
		{"garbage", "pass", []byte("not cbor"), "device", ErrMalformed},
		{"truncated", "pass", box[:len(box)/2], "device", ErrMalformed},
		{"huge", "pass", make([]byte, maxSealed+1), "device", ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Open([]byte(tc.pass), tc.data, tc.label); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestHostileParamsRefused(t *testing.T) {
	box, _ := Seal([]byte("pass"), []byte("secret"), "device", fast)
	s, err := decode(box)
	if err != nil {
		t.Fatal(err)
	}
	s.MemoryKiB = maxMemoryKiB + 1
	evil, _ := detcbor.Marshal(s)
	if _, err := Open([]byte("pass"), evil, "device"); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
}

func FuzzOpen(f *testing.F) {
	box, _ := Seal([]byte("pass"), []byte("secret"), "device", fast)
	f.Add(box)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := decode(data)
		if err != nil {
			return
		}
		if s.MemoryKiB > 1024 || s.Time > 2 {
			return // keep fuzzing fast; the bounds themselves are tested above
		}
		_, _ = Open([]byte("pass"), data, "device")
	})
}
