package rota

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"
)

// TestRedteam9ReplayedTakeAfterGoneEvicted: Dr H takes the registrar
// role; Dr K takes it over having seen H's take. A year of shifts later
// (more than MaxGone compacted ops on the role — or far fewer if K names
// made-up IDs in Seen) a device that was switched off since offers H's old
// take again: the gone list has forgotten it, and H's compacted mark does
// not supersede the very op it marks (mark.after is strict), so H is shown
// on call again next to K.
func TestRedteam9ReplayedTakeAfterGoneEvicted(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	h := newPerson(t, "h", "registrar")
	k := newPerson(t, "k", "registrar")
	auth := newDir(admin, h, k)
	r := New(site)
	mustAdd(t, r, auth, admin.define(t, "reg", 1, "registrar"))
	th := h.take(t, "reg", time.Minute)
	mustAdd(t, r, auth, th)
	prev := k.take(t, "reg", 2*time.Minute, th.ID)
	mustAdd(t, r, auth, prev)
	// K hands back and forth to itself: every shift compacts one op.
	for i := range MaxGone + 8 {
		op := k.take(t, "reg", time.Duration(3+i)*time.Minute, prev.ID)
		mustAdd(t, r, auth, op)
		prev = op
	}
	if got := holders(mustRole(t, r, auth, "reg")); !slices.Equal(got, holdersOf(k)) {
		t.Fatalf("before the replay: holders %v", got)
	}
	r.Add(th, auth) //nolint:errcheck // the replay, as sync would offer it
	if v := mustRole(t, r, auth, "reg"); !slices.Equal(holders(v), holdersOf(k)) || v.Split {
		t.Fatalf("a replayed superseded take resurrected its holder: holders %v split %v", holders(v), v.Split)
	}
}

func holdersOf(ps ...*person) (out []peer.ID) {
	for _, p := range ps {
		out = append(out, p.id)
	}
	return out
}

// TestRedteam9PendingFilledByOneColleague: any colleague of the site —
// no rota role at all — signs MaxPending takes of roles nobody defined.
// They are held (pending has no per-signer share and no expiry), carried
// to every device by sync, and persisted; from then on a take that
// arrives before its role's definition (gossip out of order, a device
// back from a partition) is refused, so the device shows the role with no
// holder once the definition arrives, and urgent escalation finds nobody.
func TestRedteam9PendingFilledByOneColleague(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	reg := newPerson(t, "reg", "registrar")
	mallory := newPerson(t, "mallory", "nurse")
	auth := newDir(admin, reg, mallory)
	r := New(site)
	for i := range MaxPending {
		if _, err := r.Add(mallory.take(t, RoleID(fmt.Sprintf("junk-%d", i)), 0), auth); err != nil {
			break
		}
	}
	def := admin.define(t, "reg", 1, "registrar")
	take := reg.take(t, "reg", time.Minute)
	if _, err := r.Add(take, auth); errors.Is(err, ErrFull) {
		t.Fatalf("a legitimate take arriving before its definition is refused: %v", err)
	}
	mustAdd(t, r, auth, def)
	if got := holders(mustRole(t, r, auth, "reg")); !slices.Equal(got, holdersOf(reg)) {
		t.Fatalf("holders %v", got)
	}
}

// TestRedteam9FutureDatedOpBlocksHandover: Dr S's phone clock ran a day
// ahead when S took the registrar role. The clock is put right and S hands
// the role over to Dr T, naming the take. A signer's ops supersede one
// another by their own (Time, ID) — no bound on how far ahead Time may be
// — so the hand-over, "earlier" than S's take, is superseded by it, while
// it supersedes the take: the role is shown with nobody on call, and
// every later op of S on the role is void until the clock reaches the
// take's time.
func TestRedteam9FutureDatedOpBlocksHandover(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	s := newPerson(t, "s", "registrar")
	tt := newPerson(t, "t", "registrar")
	auth := newDir(admin, s, tt)
	r := New(site)
	mustAdd(t, r, auth, admin.define(t, "reg", 1, "registrar"))
	take := s.take(t, "reg", 24*time.Hour)
	mustAdd(t, r, auth, take)
	hand := s.sign(t, Draft{Kind: KindHandover, Role: "reg", Time: t0.Add(time.Hour), Seen: []OpID{take.ID}, To: tt.id})
	mustAdd(t, r, auth, hand)
	if got := holders(mustRole(t, r, auth, "reg")); !slices.Equal(got, holdersOf(tt)) {
		t.Fatalf("after S handed over to T: holders %v", got)
	}
}

// TestRedteam9RevokedAdminDefinitionsOutliveRevocation: a rota-admin's
// device is stolen. Before the CA revokes it, the thief signs MaxDefs
// definitions of the registrar role at Seq 2^64-1. Only the MaxDefs
// greatest definitions are kept, so the real admin's is dropped; once the
// thief's device is revoked no definition stands, the role vanishes from
// every view, and it cannot be defined again: the next Seq overflows to 0,
// which Sign refuses (and a lower Seq sorts below the kept ones).
func TestRedteam9RevokedAdminDefinitionsOutliveRevocation(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	thief := newPerson(t, "thief", AdminRole)
	reg := newPerson(t, "reg", "registrar")
	auth := newDir(admin, thief, reg)
	r := New(site)
	mustAdd(t, r, auth, admin.define(t, "reg", 1, "registrar"), reg.take(t, "reg", time.Minute))
	for i := range MaxDefs {
		mustAdd(t, r, auth, thief.sign(t, Draft{Kind: KindDefine, Role: "reg", Seq: math.MaxUint64,
			Name: fmt.Sprintf("nobody %d", i), Requires: "no-such-role"}))
	}
	auth.revoked[thief.id] = true
	r.Compact(auth)
	if _, ok := r.Role("reg", auth); !ok {
		// What the admin does: define it again. Seq 2 sorts below the
		// thief's kept definitions and is dropped; Seq 2^64-1 + 1 is 0,
		// which Sign refuses.
		if _, err := r.Add(admin.define(t, "reg", 2, "registrar"), auth); err != nil {
			t.Fatalf("redefining: %v", err)
		}
	}
	v, ok := r.Role("reg", auth)
	if !ok {
		t.Fatal("the registrar role vanished after the thief's revocation and cannot be defined again")
	}
	if !slices.Equal(holders(v), holdersOf(reg)) {
		t.Fatalf("holders %v", holders(v))
	}
}

// TestRedteam9RevokedAdminRolesCountForever: the same thief defines
// MaxRoles junk roles. After revocation none of them is in any view, but
// they still count against MaxRoles (nothing frees a role), so the site
// can never define an on-call role again.
func TestRedteam9RevokedAdminRolesCountForever(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	thief := newPerson(t, "thief", AdminRole)
	auth := newDir(admin, thief)
	r := New(site)
	for i := range MaxRoles {
		mustAdd(t, r, auth, thief.define(t, RoleID(fmt.Sprintf("junk-%d", i)), 1, "nobody"))
	}
	auth.revoked[thief.id] = true
	r.Compact(auth)
	if n := len(r.View(auth)); n != 0 {
		t.Fatalf("%d junk roles in view", n)
	}
	if _, err := r.Add(admin.define(t, "reg", 1, "registrar"), auth); err != nil {
		t.Fatalf("after the thief's revocation the site cannot define a role: %v", err)
	}
}
