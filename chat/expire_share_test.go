package chat

import (
	"testing"
	"time"
	"unsafe"

	"github.com/medmesh/medmesh/crdt"
)

// inside reports whether s's bytes lie in raw's backing array.
func inside(s, raw []byte) bool {
	if len(s) == 0 || len(raw) == 0 {
		return false
	}
	p, lo := uintptr(unsafe.Pointer(&s[0])), uintptr(unsafe.Pointer(&raw[0]))
	return p >= lo && p < lo+uintptr(cap(raw))
}

// TestExpireReleasesEncoding: an op retention deleted keeps its header
// (for causality) but nothing that points into its raw encoding — Share
// points the sender, dependencies and signature there, and the whole
// buffer, ciphertext included, would stay alive with them.
func TestExpireReleasesEncoding(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, envs := w.create(alice, "t", bob)
	rb := w.join(bob, ra.Tag())
	ok := must[crdt.OpID](t)
	ret, _ := ok(split(ra.SetRetention(24 * time.Hour)))
	old, oldID := ok(split(ra.Send("old, to be destroyed", SendOptions{})))
	w.now = w.now.Add(30 * time.Hour)
	deliver(t, envsCat(envs, ret, old), rb)
	for name, r := range map[string]*Replica{"sender": ra, "receiver": rb} {
		if n := r.Expire(w.now); n != 1 {
			t.Fatalf("%s: expired %d", name, n)
		}
		e := r.ops[oldID].env
		if e.Body != nil {
			t.Fatalf("%s: body kept", name)
		}
		for f, s := range map[string][]byte{"Sender": e.Sender, "Sig": e.Sig, "Deps[0]": e.Deps[0]} {
			if inside(s, old[0]) {
				t.Errorf("%s: expired op's kept envelope %s still points into its raw encoding (%d bytes, body included)", name, f, len(old[0]))
			}
		}
	}
}

func envsCat(a ...[][]byte) [][]byte {
	var out [][]byte
	for _, x := range a {
		out = append(out, x...)
	}
	return out
}
