package rota

import (
	"bytes"
	"testing"
	"time"
)

// FuzzDecode: whatever Decode accepts is canonical, within bounds and
// signed; nothing panics.
func FuzzDecode(f *testing.F) {
	admin := newPerson(f, "admin", AdminRole)
	ann := newPerson(f, "ann", "reg")
	def := admin.define(f, "cardio-reg", 1, "reg", "cardio-cons")
	take := ann.take(f, "cardio-reg", 0, def.ID)
	for _, o := range []*Op{def, take,
		ann.sign(f, Draft{Kind: KindHandover, Role: "cardio-reg", Time: t0.Add(time.Minute), Seen: []OpID{take.ID}, To: admin.id}),
		ann.sign(f, Draft{Kind: KindRelease, Role: "cardio-reg", Seen: []OpID{take.ID}}),
	} {
		f.Add(o.Raw())
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		o, err := Decode(raw)
		if err != nil {
			return
		}
		if !bytes.Equal(o.Raw(), raw) || len(raw) > MaxOpSize || len(o.Seen) > MaxSeen || len(o.Chain) > MaxChain || !o.Role.Valid() {
			t.Fatalf("accepted %+v", o)
		}
		r := New(o.Site)
		auth := newDir(admin, ann)
		r.Add(o, auth) //nolint:errcheck
		r.View(auth)
	})
}

// FuzzLoad: a stored rota that is not what Marshal wrote is refused or
// loaded within bounds; nothing panics.
func FuzzLoad(f *testing.F) {
	admin := newPerson(f, "admin", AdminRole)
	ann := newPerson(f, "ann", "reg")
	auth := newDir(admin, ann)
	r := New(site)
	def := admin.define(f, "a", 1, "reg")
	t1 := ann.take(f, "a", 0)
	mustAdd(f, r, auth, def, t1, ann.take(f, "a", time.Minute, t1.ID))
	data, err := r.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Load(data, auth)
		if err != nil {
			return
		}
		r.View(auth)
		if _, err := r.Marshal(); err != nil {
			t.Fatal(err)
		}
	})
}
