package rota

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"
)

// TestFutureDatedTakeTakenOver: S's take is stamped a day ahead; T takes
// the role over naming it, and S, its clock put right, takes it back
// naming T's take. S's compacted mark sits at the effective time of its
// take (just before T's), not a day ahead, so S's later take stands.
func TestFutureDatedTakeTakenOver(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	s := newPerson(t, "s", "registrar")
	tt := newPerson(t, "t", "registrar")
	auth := newDir(admin, s, tt)
	r := New(site)
	mustAdd(t, r, auth, admin.define(t, "reg", 1, "registrar"))
	future := s.take(t, "reg", 24*time.Hour)
	mustAdd(t, r, auth, future)
	byT := tt.take(t, "reg", time.Hour, future.ID)
	mustAdd(t, r, auth, byT)
	back := s.take(t, "reg", 2*time.Hour, byT.ID)
	mustAdd(t, r, auth, back)
	if got := holders(mustRole(t, r, auth, "reg")); !slices.Equal(got, holdersOf(s)) {
		t.Fatalf("holders %v, want S", got)
	}
	// A replay of the future-dated take changes nothing.
	r.Add(future, auth) //nolint:errcheck // the replay
	if v := mustRole(t, r, auth, "reg"); !slices.Equal(holders(v), holdersOf(s)) || v.Split {
		t.Fatalf("after the replay: holders %v split %v", holders(v), v.Split)
	}
}

// TestOneDefinitionPerSigner: an admin signing many definitions of a
// role holds one place among MaxDefs; another admin's stays, and after
// the first admin's revocation the role can be updated at Seq+1.
func TestOneDefinitionPerSigner(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	thief := newPerson(t, "thief", AdminRole)
	auth := newDir(admin, thief)
	r := New(site)
	mustAdd(t, r, auth, admin.define(t, "reg", 1, "registrar"))
	for i := range 3 * MaxDefs {
		r.Add(thief.sign(t, Draft{Kind: KindDefine, Role: "reg", Seq: math.MaxUint64 - uint64(i), //nolint:errcheck // some are not kept
			Name: fmt.Sprintf("junk %d", i), Requires: "nobody"}), auth)
	}
	if n := len(r.roles["reg"].defs); n != 2 {
		t.Fatalf("%d definitions kept, want one per signer (2)", n)
	}
	if v := mustRole(t, r, auth, "reg"); v.Requires != "nobody" {
		t.Fatalf("while the thief is vouched for its definition wins: %+v", v)
	}
	auth.revoked[thief.id] = true
	v := mustRole(t, r, auth, "reg")
	if v.Requires != "registrar" || v.Seq != 1 {
		t.Fatalf("after revocation: %+v", v)
	}
	mustAdd(t, r, auth, admin.define(t, "reg", v.Seq+1, "registrar-2"))
	if v := mustRole(t, r, auth, "reg"); v.Requires != "registrar-2" || v.Seq != 2 {
		t.Fatalf("update after revocation: %+v", v)
	}
}
