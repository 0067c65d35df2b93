package rota

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestRedteam10UncheckedOpsWhileUndefined: the admin who defined the
// registrar role leaves (revoked; an expired certificate awaiting renewal
// does the same). Until another admin defines the role again it is in no
// view — but it is still held, and addHolderOp judges a holder op only
// when a vouched-for definition stands, so Mallory, a nurse with no
// registrar role, fills it with MaxLive takes (well within one signer's
// rate burst). They are never valid, so nothing names or compacts them:
// once the new admin redefines the role, every take, hand-over and
// release of it is refused with ErrFull — the role is stuck on whoever
// held it, on every device that took Mallory's ops in (until it restarts).
func TestRedteam10UncheckedOpsWhileUndefined(t *testing.T) {
	t.Skip("redteam10: holder ops of a role with no standing definition are taken in unjudged; a nurse fills MaxLive and blocks the role once redefined")
	old := newPerson(t, "old-admin", AdminRole)
	admin := newPerson(t, "admin", AdminRole)
	reg := newPerson(t, "reg", "registrar")
	next := newPerson(t, "next", "registrar")
	mallory := newPerson(t, "mallory", "nurse")
	auth := newDir(old, admin, reg, next, mallory)
	r := New(site)
	take := reg.take(t, "reg", time.Minute)
	mustAdd(t, r, auth, old.define(t, "reg", 1, "registrar"), take)
	auth.revoked[old.id] = true
	r.Compact(auth)
	junk := 0
	for i := range MaxLive {
		if ok, err := r.Add(mallory.take(t, "reg", time.Duration(2+i)*time.Second), auth); ok && err == nil {
			junk++
		}
	}
	if junk > 0 {
		t.Errorf("%d takes by a colleague without the required role were taken in while the role had no standing definition", junk)
	}
	mustAdd(t, r, auth, admin.define(t, "reg", 1, "registrar"))
	v := mustRole(t, r, auth, "reg")
	hand := reg.sign(t, Draft{Kind: KindHandover, Role: "reg", Time: t0.Add(time.Hour), Seen: v.Live, To: next.id})
	if _, err := r.Add(hand, auth); errors.Is(err, ErrFull) {
		t.Fatalf("the registrar cannot hand over once the role is redefined: %v", err)
	}
	if got := holders(mustRole(t, r, auth, "reg")); !slices.Equal(got, holdersOf(next)) {
		t.Fatalf("holders %v", got)
	}
}
