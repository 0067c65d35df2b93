package rota

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestSplitAfterPartitionAndResolution(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	ann := newPerson(t, "ann", "cardio-registrar")
	bob := newPerson(t, "bob", "cardio-registrar")
	auth := newDir(admin, ann, bob)
	def := admin.define(t, "cardio-reg", 1, "cardio-registrar")
	first := ann.take(t, "cardio-reg", 0)

	left, right := New(site), New(site)
	mustAdd(t, left, auth, def, first)
	mustAdd(t, right, auth, def, first)

	// Partitioned: each side hands the role to itself having seen only
	// ann's take.
	a := ann.take(t, "cardio-reg", time.Minute, first.ID)
	b := bob.take(t, "cardio-reg", 2*time.Minute, first.ID)
	mustAdd(t, left, auth, a)
	mustAdd(t, right, auth, b)
	for _, r := range []*Rota{left, right} {
		if v := mustRole(t, r, auth, "cardio-reg"); v.Split || len(v.Holders) != 1 {
			t.Fatalf("before meeting: %+v", v)
		}
	}
	// They meet.
	mustAdd(t, left, auth, b)
	mustAdd(t, right, auth, a)
	for _, r := range []*Rota{left, right} {
		v := mustRole(t, r, auth, "cardio-reg")
		if !v.Split || !slices.Equal(holders(v), []peer.ID{ann.id, bob.id}) || len(v.Live) != 2 {
			t.Fatalf("after meeting: split %v holders %v", v.Split, holders(v))
		}
	}
	// Bob hands over to ann having seen both: one holder, no split.
	v := mustRole(t, left, auth, "cardio-reg")
	h := bob.sign(t, Draft{Kind: KindHandover, Role: "cardio-reg", Time: t0.Add(3 * time.Minute), Seen: v.Live, To: ann.id})
	mustAdd(t, left, auth, h)
	mustAdd(t, right, auth, h)
	for _, r := range []*Rota{left, right} {
		v := mustRole(t, r, auth, "cardio-reg")
		if v.Split || !slices.Equal(holders(v), []peer.ID{ann.id}) || v.Holders[0].Since != t0.Add(3*time.Minute) {
			t.Fatalf("after hand-over: %+v", v)
		}
		if len(r.roles["cardio-reg"].ops) != 1 {
			t.Fatalf("superseded ops not compacted: %d held", len(r.roles["cardio-reg"].ops))
		}
	}
	// Release: nobody holds it.
	rel := ann.sign(t, Draft{Kind: KindRelease, Role: "cardio-reg", Time: t0.Add(4 * time.Minute), Seen: []OpID{h.ID}})
	mustAdd(t, left, auth, rel)
	if v := mustRole(t, left, auth, "cardio-reg"); len(v.Holders) != 0 || v.Split {
		t.Fatalf("after release: %+v", v)
	}
}

func TestAttacks(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	ann := newPerson(t, "ann", "cardio-registrar")
	mal := newPerson(t, "mallory", "nurse")
	other := newPerson(t, "otto", AdminRole, "cardio-registrar")
	other.m.Site = "south"
	auth := newDir(admin, ann, mal, other)
	def := admin.define(t, "cardio-reg", 1, "cardio-registrar")
	take := ann.take(t, "cardio-reg", 0)
	fresh := func() *Rota {
		r := New(site)
		mustAdd(t, r, auth, def, take)
		return r
	}

	t.Run("take without the required role", func(t *testing.T) {
		r := fresh()
		if _, err := r.Add(mal.take(t, "cardio-reg", time.Minute, take.ID), auth); !errors.Is(err, ErrNotAllowed) {
			t.Fatalf("take by a nurse: %v", err)
		}
		// Even if it got in (the definition arrived later), it neither
		// holds nor supersedes.
		r2 := New(site)
		mustAdd(t, r2, auth, take, mal.take(t, "cardio-reg", time.Minute, take.ID), def)
		if v := mustRole(t, r2, auth, "cardio-reg"); !slices.Equal(holders(v), []peer.ID{ann.id}) || v.Split {
			t.Fatalf("nurse's take counted: %+v", v)
		}
	})
	t.Run("hand over to someone without the role", func(t *testing.T) {
		r := fresh()
		h := ann.sign(t, Draft{Kind: KindHandover, Role: "cardio-reg", Time: t0.Add(time.Minute), Seen: []OpID{take.ID}, To: mal.id})
		if _, err := r.Add(h, auth); !errors.Is(err, ErrNotAllowed) {
			t.Fatalf("hand-over to a nurse: %v", err)
		}
	})
	t.Run("release by a colleague without the role", func(t *testing.T) {
		r := fresh()
		rel := mal.sign(t, Draft{Kind: KindRelease, Role: "cardio-reg", Time: t0.Add(time.Minute), Seen: []OpID{take.ID}})
		if _, err := r.Add(rel, auth); !errors.Is(err, ErrNotAllowed) {
			t.Fatalf("release by a nurse: %v", err)
		}
	})
	t.Run("define by a non-rota-admin", func(t *testing.T) {
		r := fresh()
		bad := ann.define(t, "cardio-reg", 2, "nurse")
		if _, err := r.Add(bad, auth); !errors.Is(err, ErrNotAllowed) {
			t.Fatalf("define by a registrar: %v", err)
		}
		if _, err := r.Add(ann.define(t, "fake", 1, "nurse"), auth); !errors.Is(err, ErrNotAllowed) {
			t.Fatalf("define of a new role by a registrar: %v", err)
		}
		if v := r.View(auth); len(v) != 1 || v[0].Requires != "cardio-registrar" {
			t.Fatalf("view: %+v", v)
		}
	})
	t.Run("admin of another site", func(t *testing.T) {
		r := fresh()
		if _, err := r.Add(other.define(t, "cardio-reg", 9, "nurse"), auth); !errors.Is(err, ErrNotAllowed) {
			t.Fatalf("define by another site's admin: %v", err)
		}
		o := other.sign(t, Draft{Kind: KindDefine, Role: "x", Site: "south", Seq: 1, Name: "x", Requires: "y"})
		if _, err := r.Add(o, auth); !errors.Is(err, ErrSite) {
			t.Fatalf("op of another site: %v", err)
		}
	})
	t.Run("forged signature", func(t *testing.T) {
		raw := slices.Clone(take.Raw())
		raw[len(raw)-1] ^= 1
		if _, err := Decode(raw); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("flipped signature: %v", err)
		}
		// Ann's take re-signed by mallory's key under ann's peer ID.
		if _, err := Decode(resign(t, mal, take.Raw(), ann.id)); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("signed by another key: %v", err)
		}
	})
	t.Run("replayed ops", func(t *testing.T) {
		r := fresh()
		t2 := ann.take(t, "cardio-reg", time.Minute, take.ID)
		mustAdd(t, r, auth, t2)
		if changed, err := r.Add(take, auth); changed || err != nil {
			t.Fatalf("replayed superseded take: %v %v", changed, err)
		}
		if changed, err := r.Add(t2, auth); changed || err != nil {
			t.Fatalf("replayed take: %v %v", changed, err)
		}
		if v := mustRole(t, r, auth, "cardio-reg"); v.Split || v.Holders[0].Op != t2.ID {
			t.Fatalf("replay changed the view: %+v", v)
		}
	})
	t.Run("revoked signer and holder", func(t *testing.T) {
		bob := newPerson(t, "bob", "cardio-registrar")
		a := newDir(admin, ann, bob)
		r := New(site)
		mustAdd(t, r, a, def, take)
		bt := bob.sign(t, Draft{Kind: KindTake, Role: "cardio-reg", Time: t0.Add(time.Minute)}) // concurrent
		mustAdd(t, r, a, bt)
		a.revoked[bob.id] = true
		if v := mustRole(t, r, a, "cardio-reg"); v.Split || !slices.Equal(holders(v), []peer.ID{ann.id}) {
			t.Fatalf("revoked signer's take counts: %+v", v)
		}
		a.revoked[bob.id], a.revoked[ann.id] = false, true
		if v := mustRole(t, r, a, "cardio-reg"); !slices.Equal(holders(v), []peer.ID{bob.id}) {
			t.Fatalf("revoked holder returned: %+v", v)
		}
		if _, err := r.Add(ann.take(t, "cardio-reg", 2*time.Minute), a); !errors.Is(err, ErrNotAllowed) {
			t.Fatalf("op of a revoked device: %v", err)
		}
		a.revoked[admin.id] = true
		if v := r.View(a); len(v) != 0 {
			t.Fatalf("role of a revoked admin's definition shown: %+v", v)
		}
	})
	t.Run("flooding", func(t *testing.T) {
		r := fresh()
		// One signer's concurrent takes supersede one another.
		for i := range 3 * MaxLive {
			mustAdd(t, r, auth, ann.take(t, "cardio-reg", time.Duration(i+1)*time.Second))
		}
		if v := mustRole(t, r, auth, "cardio-reg"); v.Split || len(r.roles["cardio-reg"].ops) != 1 {
			t.Fatalf("flood by one signer: split %v, %d ops held", v.Split, len(r.roles["cardio-reg"].ops))
		}
		if len(r.roles["cardio-reg"].gone) > MaxGone {
			t.Fatal("gone set unbounded")
		}
		// Roles.
		for i := 1; i < MaxRoles; i++ {
			mustAdd(t, r, auth, admin.define(t, RoleID("r"+string(rune('a'+i%26))+string(rune('a'+i/26))), 1, "x"))
		}
		if _, err := r.Add(admin.define(t, "one-too-many", 1, "x"), auth); !errors.Is(err, ErrFull) {
			t.Fatalf("role %d: %v", MaxRoles+1, err)
		}
		// Ops waiting for a role that never comes: one signer's share,
		// then the bound over all signers.
		r = New(site)
		for i := range MaxPendingPerSigner {
			mustAdd(t, r, auth, ann.take(t, "never", time.Duration(i)*time.Second))
		}
		if _, err := r.Add(ann.take(t, "never", time.Hour), auth); !errors.Is(err, ErrFull) {
			t.Fatalf("pending op %d of one signer: %v", MaxPendingPerSigner+1, err)
		}
		for i := MaxPendingPerSigner; i < MaxPending; i++ {
			p := newPerson(t, fmt.Sprintf("p%d", i/MaxPendingPerSigner), "reg")
			auth.known[p.id] = p.m
			mustAdd(t, r, auth, p.take(t, "never", time.Duration(i)*time.Second))
		}
		late := newPerson(t, "late", "reg")
		auth.known[late.id] = late.m
		if _, err := r.Add(late.take(t, "never", time.Hour), auth); !errors.Is(err, ErrFull) {
			t.Fatalf("pending op %d: %v", MaxPending+1, err)
		}
	})
	t.Run("oversized and malformed", func(t *testing.T) {
		if _, err := Decode(make([]byte, MaxOpSize+1)); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("oversized: %v", err)
		}
		long := make([]RoleID, MaxChain+1)
		for i := range long {
			long[i] = RoleID("c" + string(rune('a'+i)))
		}
		if _, err := Sign(admin.key, Draft{Kind: KindDefine, Role: "a", Site: site, Seq: 1, Name: "a", Requires: "b", Chain: long}); !errors.Is(err, ErrMalformed) {
			t.Fatalf("long chain: %v", err)
		}
		for _, d := range []Draft{
			{Kind: KindTake, Role: "Bad Role", Site: site},
			{Kind: KindTake, Role: "a", Site: site, Name: "x"},
			{Kind: KindHandover, Role: "a", Site: site},
			{Kind: KindDefine, Role: "a", Site: site, Seq: 1, Name: "a", Requires: "b", Chain: []RoleID{"a"}},
			{Kind: 9, Role: "a", Site: site},
			{Kind: KindTake, Role: "a", Site: site, Seen: []OpID{{1}, {1}}},
		} {
			if _, err := Sign(admin.key, d); !errors.Is(err, ErrMalformed) {
				t.Errorf("%+v: %v", d, err)
			}
		}
	})
}

func TestNext(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	ann := newPerson(t, "ann", "cardio-consultant")
	auth := newDir(admin, ann)
	r := New(site)
	mustAdd(t, r, auth,
		admin.define(t, "cardio-reg", 1, "cardio-registrar", "cardio-cons", "site-manager"),
		admin.define(t, "cardio-cons", 1, "cardio-consultant"),
		ann.take(t, "cardio-cons", 0))
	view := r.View(auth)
	n, ok := Next(view, "cardio-reg", 1)
	if !ok || n.ID != "cardio-cons" || !slices.Equal(holders(n), []peer.ID{ann.id}) {
		t.Fatalf("next of cardio-reg: %+v %v", n, ok)
	}
	if _, ok := Next(view, "cardio-reg", 2); ok {
		t.Fatal("undefined role in the chain found")
	}
	if _, ok := Next(view, "cardio-reg", 3); ok {
		t.Fatal("beyond the chain found")
	}
	// An update wins over what it saw.
	upd := admin.define(t, "cardio-reg", 2, "cardio-registrar")
	mustAdd(t, r, auth, upd)
	if v := mustRole(t, r, auth, "cardio-reg"); len(v.Chain) != 0 || v.Seq != 2 {
		t.Fatalf("update: %+v", v)
	}
}

func TestMarshalLoad(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	ann := newPerson(t, "ann", "r")
	bob := newPerson(t, "bob", "r")
	auth := newDir(admin, ann, bob)
	r := New(site)
	def := admin.define(t, "a", 1, "r")
	t1 := ann.take(t, "a", 0)
	t2 := bob.take(t, "a", time.Minute, t1.ID)
	mustAdd(t, r, auth, def, t1, t2, ann.take(t, "b", 0))
	data, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Load(data, auth)
	if err != nil {
		t.Fatal(err)
	}
	if changed, _ := back.Add(t1, auth); changed {
		t.Fatal("compacted op taken again after reload")
	}
	again, err := back.Marshal()
	if err != nil || string(again) != string(data) {
		t.Fatalf("reload differs: %v", err)
	}
	if v := mustRole(t, back, auth, "a"); !slices.Equal(holders(v), []peer.ID{bob.id}) {
		t.Fatalf("reloaded view: %+v", v)
	}
	if _, err := Load(data[:len(data)-1], auth); err == nil {
		t.Fatal("truncated rota loaded")
	}
}
