package rota

import (
	"crypto/rand"
	"errors"
	mrand "math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
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

// TestRedteam10NamedOpResurrectsAfterFlush: Dr H took the registrar role
// on a ward device (take X) during a partition; Dr K, who had seen X,
// took it over (naming X) and later again. Device D never received X: it
// remembers X only as "named by a compacted op" in the role's gone list.
// Mallory, a registrar, takes the role with takes naming sixteen made-up
// op IDs each (about 65 ops, within one signer's rate burst), which
// pushes X out of D's gone list, and hands it back to K. When X finally
// reaches D, nothing supersedes it (H has no compacted mark on D): D shows
// H on call beside K, split, while every device that had X shows K only.
func TestRedteam10NamedOpResurrectsAfterFlush(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	h := newPerson(t, "h", "registrar")
	k := newPerson(t, "k", "registrar")
	mallory := newPerson(t, "mallory", "registrar")
	auth := newDir(admin, h, k, mallory)
	def := admin.define(t, "reg", 1, "registrar")
	x := h.take(t, "reg", time.Minute)
	y := k.take(t, "reg", 2*time.Minute, x.ID)
	z := k.take(t, "reg", 3*time.Minute, y.ID)
	e := New(site) // had X all along
	mustAdd(t, e, auth, def, x, y, z)
	d := New(site) // never got X
	mustAdd(t, d, auth, def, y, z)
	// Mallory's flush, delivered to both.
	live := []OpID{z.ID}
	var prev *Op
	for i := range MaxGone/(MaxSeen-1) + 2 {
		seen := append([]OpID(nil), live...)
		for len(seen) < MaxSeen {
			var id OpID
			rand.Read(id[:])
			seen = append(seen, id)
		}
		prev = mallory.take(t, "reg", 4*time.Minute+time.Duration(i)*time.Second, seen...)
		mustAdd(t, e, auth, prev)
		mustAdd(t, d, auth, prev)
		live = []OpID{prev.ID}
	}
	back := mallory.sign(t, Draft{Kind: KindHandover, Role: "reg", Time: t0.Add(time.Hour), Seen: live, To: k.id})
	mustAdd(t, e, auth, back)
	mustAdd(t, d, auth, back)
	if got := holders(mustRole(t, d, auth, "reg")); !slices.Equal(got, holdersOf(k)) {
		t.Fatalf("before X reaches D: holders %v", got)
	}
	d.Add(x, auth) //nolint:errcheck // X arrives at last, as sync offers it
	ve, vd := mustRole(t, e, auth, "reg"), mustRole(t, d, auth, "reg")
	if !slices.Equal(holders(vd), holders(ve)) || vd.Split != ve.Split {
		t.Fatalf("replicas disagree on the holder: D %v (split %v), E %v (split %v)", holders(vd), vd.Split, holders(ve), ve.Split)
	}
}

// TestRedteam10ClockBehindLeavesNobody: Dr V took the registrar role at
// 22:00, Dr K took it over at 23:00. V's phone then loses its clock (a
// reset to a day earlier, say) and V takes the role back, naming K's take.
// V's take is valid, so it supersedes K's; but V's compacted mark from
// 22:00 is later than the new take's time, so V's own mark supersedes it
// too: the role shows nobody on call (and urgent escalation finds
// nobody) until V's clock passes 22:00 again — on every replica. A
// registrar who ever held the role can do the same on purpose, stamping
// the take back, whenever she likes.
func TestRedteam10ClockBehindLeavesNobody(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	v := newPerson(t, "v", "registrar")
	k := newPerson(t, "k", "registrar")
	auth := newDir(admin, v, k)
	r := New(site)
	mustAdd(t, r, auth, admin.define(t, "reg", 1, "registrar"))
	tv := v.take(t, "reg", 2*time.Hour)
	tk := k.take(t, "reg", 3*time.Hour, tv.ID)
	mustAdd(t, r, auth, tv, tk)
	back := v.take(t, "reg", 3*time.Hour-24*time.Hour, tk.ID)
	mustAdd(t, r, auth, back)
	if got := holders(mustRole(t, r, auth, "reg")); len(got) == 0 {
		t.Fatalf("V's take with a clock a day behind supersedes K's and is itself superseded by V's old mark: nobody on call")
	}
}

// TestRedteam10PendingWhileUndefinedBounded: the next try after
// TestRedteam10UncheckedOpsWhileUndefined — Mallory is a registrar, so
// the old definition allows her takes: they wait, within her share of
// the pending queue, and once the role is redefined they are judged, one
// supersedes the others, and the registrar on call can still hand over.
// A take the new definition no longer allows is dropped, not held.
func TestRedteam10PendingWhileUndefinedBounded(t *testing.T) {
	old := newPerson(t, "old-admin", AdminRole)
	admin := newPerson(t, "admin", AdminRole)
	reg := newPerson(t, "reg", "registrar", "consultant")
	next := newPerson(t, "next", "registrar", "consultant")
	mallory := newPerson(t, "mallory", "registrar")
	auth := newDir(old, admin, reg, next, mallory)
	r := New(site)
	mustAdd(t, r, auth, old.define(t, "reg", 1, "registrar"), reg.take(t, "reg", time.Minute))
	auth.revoked[old.id] = true
	r.Compact(auth)
	held := 0
	for i := range MaxLive + 8 {
		if ok, err := r.Add(mallory.take(t, "reg", time.Duration(2+i)*time.Second), auth); ok && err == nil {
			held++
		}
	}
	if held > MaxPendingPerSigner {
		t.Errorf("%d of one colleague's takes held while the role had no standing definition (share %d)", held, MaxPendingPerSigner)
	}
	// Redefined to need a consultant: Mallory's waiting takes are dropped.
	mustAdd(t, r, auth, admin.define(t, "reg", 1, "consultant"))
	for _, o := range r.Ops() {
		if o.Signer == mallory.id {
			t.Errorf("a take the standing definition does not allow is still held: %s", o.Kind)
		}
	}
	v := mustRole(t, r, auth, "reg")
	hand := reg.sign(t, Draft{Kind: KindHandover, Role: "reg", Time: t0.Add(time.Hour), Seen: v.Live, To: next.id})
	mustAdd(t, r, auth, hand)
	if got := holders(mustRole(t, r, auth, "reg")); !slices.Equal(got, holdersOf(next)) {
		t.Fatalf("holders %v", got)
	}
}

// TestRedteam10ClockBehindAfterSecondTake: the next try after
// TestRedteam10ClockBehindLeavesNobody — K took the role twice, so the
// take that superseded V's is compacted too and V's back-stamped take
// names only K's second one.
func TestRedteam10ClockBehindAfterSecondTake(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	v := newPerson(t, "v", "registrar")
	k := newPerson(t, "k", "registrar")
	auth := newDir(admin, v, k)
	r := New(site)
	mustAdd(t, r, auth, admin.define(t, "reg", 1, "registrar"))
	tv := v.take(t, "reg", 2*time.Hour)
	tk := k.take(t, "reg", 3*time.Hour, tv.ID)
	tk2 := k.take(t, "reg", 4*time.Hour, tk.ID)
	mustAdd(t, r, auth, tv, tk, tk2)
	back := v.take(t, "reg", 4*time.Hour-24*time.Hour, tk2.ID)
	mustAdd(t, r, auth, back)
	if got := holders(mustRole(t, r, auth, "reg")); !slices.Equal(got, holdersOf(v)) {
		t.Fatalf("holders %v, want V (nobody on call if empty)", got)
	}
}

// TestRedteam10ClockBehindAnyOrder: the back-stamped take follows V's
// mark through K's takes, compacted or not, whatever order the ops
// arrive in, across a restart, and through a take of K compacted by a
// later one concurrent with V's: every replica shows V on call beside
// K's later take (split), or V alone.
func TestRedteam10ClockBehindAnyOrder(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	v := newPerson(t, "v", "registrar")
	k := newPerson(t, "k", "registrar")
	auth := newDir(admin, v, k)
	def := admin.define(t, "reg", 1, "registrar")
	tv := v.take(t, "reg", 2*time.Hour)
	tk := k.take(t, "reg", 3*time.Hour, tv.ID)
	tk2 := k.take(t, "reg", 4*time.Hour, tk.ID)
	tk3 := k.take(t, "reg", 5*time.Hour, tk2.ID)
	back := v.take(t, "reg", 5*time.Hour-24*time.Hour, tk3.ID)
	tk4 := k.take(t, "reg", 6*time.Hour, tk3.ID) // concurrent with back
	for _, c := range []struct {
		name string
		ops  []*Op
		want []peer.ID
	}{
		{"three takes", []*Op{tv, tk, tk2, tk3, back}, holdersOf(v)},
		{"concurrent", []*Op{tv, tk, tk2, tk3, back, tk4}, holdersOf(v, k)},
	} {
		var want Role
		for n := range 120 {
			ops := slices.Clone(c.ops)
			rng := mrand.New(mrand.NewPCG(uint64(n), 3))
			rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
			r := New(site)
			mustAdd(t, r, auth, def)
			for i, o := range ops {
				r.Add(o, auth) //nolint:errcheck // superseded ones are compacted
				if n%2 == 1 && i == len(ops)/2 {
					data, err := r.Marshal()
					if err != nil {
						t.Fatal(err)
					}
					if r, err = Load(data, auth); err != nil {
						t.Fatal(err)
					}
				}
			}
			got := mustRole(t, r, auth, "reg")
			if h := holders(got); !slices.Equal(sortedIDs(h), sortedIDs(c.want)) {
				t.Fatalf("%s, order %d: holders %v, want %v", c.name, n, h, c.want)
			}
			if n == 0 {
				want = got
			} else if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s, order %d: replicas disagree:\n got %+v\nwant %+v", c.name, n, got, want)
			}
		}
	}
}

func sortedIDs(ids []peer.ID) []peer.ID {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

// TestRedteam10NamedOpFlushOwnShareOnly: the next try after
// TestRedteam10NamedOpResurrectsAfterFlush — Mallory names X herself
// first, so that X is charged to her share, then flushes her share.
func TestRedteam10NamedOpFlushOwnShareOnly(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	h := newPerson(t, "h", "registrar")
	k := newPerson(t, "k", "registrar")
	mallory := newPerson(t, "mallory", "registrar")
	auth := newDir(admin, h, k, mallory)
	def := admin.define(t, "reg", 1, "registrar")
	x := h.take(t, "reg", time.Minute)
	y := k.take(t, "reg", 2*time.Minute, x.ID)
	z := k.take(t, "reg", 3*time.Minute, y.ID)
	d := New(site) // never gets X until the end
	mustAdd(t, d, auth, def)
	first := mallory.take(t, "reg", 90*time.Second, x.ID)
	second := mallory.take(t, "reg", 100*time.Second, first.ID) // first compacted: X charged to her
	mustAdd(t, d, auth, first, second, y, z)
	live := mustRole(t, d, auth, "reg").Live
	for i := range 2*MaxNamedPerSigner/(MaxSeen-len(live)) + 2 {
		seen := append([]OpID(nil), live...)
		for len(seen) < MaxSeen {
			var id OpID
			rand.Read(id[:])
			seen = append(seen, id)
		}
		op := mallory.take(t, "reg", 4*time.Minute+time.Duration(i)*time.Second, seen...)
		mustAdd(t, d, auth, op)
		live = []OpID{op.ID}
	}
	mustAdd(t, d, auth, mallory.sign(t, Draft{Kind: KindHandover, Role: "reg", Time: t0.Add(time.Hour), Seen: live, To: k.id}))
	d.Add(x, auth) //nolint:errcheck // X arrives at last
	if got := holders(mustRole(t, d, auth, "reg")); !slices.Equal(got, holdersOf(k)) {
		t.Fatalf("holders %v after X arrived, want K only", got)
	}
}

// TestRedteam10BackStampedFollowsNotStale: V's back-stamped take follows
// her mark through K's compacted takes, so a node must not treat it as a
// replay (charged to whoever delivered it, not forwarded); one of V's
// takes from before her mark, replayed, still is.
func TestRedteam10BackStampedFollowsNotStale(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	v := newPerson(t, "v", "registrar")
	k := newPerson(t, "k", "registrar")
	auth := newDir(admin, v, k)
	r := New(site)
	old := v.take(t, "reg", time.Hour)
	tv := v.take(t, "reg", 2*time.Hour, old.ID)
	tk := k.take(t, "reg", 3*time.Hour, tv.ID)
	tk2 := k.take(t, "reg", 4*time.Hour, tk.ID)
	mustAdd(t, r, auth, admin.define(t, "reg", 1, "registrar"), old, tv, tk, tk2)
	back := v.take(t, "reg", 4*time.Hour-24*time.Hour, tk2.ID)
	if r.Stale(back) {
		t.Errorf("V's back-stamped take, which follows her mark, is stale")
	}
	replay := v.take(t, "reg", 30*time.Minute)
	if !r.Stale(replay) {
		t.Errorf("a take of V's stamped before her mark, following nothing, is not stale")
	}
}

// TestRedteam10BackStampedWaitingBounded: a superseded take whose chain
// names ops not held here is kept until the chain arrives — at most one
// per signer, so Mallory, stamping takes before her own mark and naming
// made-up IDs, cannot fill MaxLive and lock the role.
func TestRedteam10BackStampedWaitingBounded(t *testing.T) {
	admin := newPerson(t, "admin", AdminRole)
	mallory := newPerson(t, "mallory", "registrar")
	k := newPerson(t, "k", "registrar")
	auth := newDir(admin, mallory, k)
	r := New(site)
	tm := mallory.take(t, "reg", 2*time.Hour)
	tk := k.take(t, "reg", 3*time.Hour, tm.ID)
	mustAdd(t, r, auth, admin.define(t, "reg", 1, "registrar"), tm, tk)
	for i := range MaxLive + 8 {
		var made OpID
		rand.Read(made[:])
		r.Add(mallory.take(t, "reg", time.Hour-time.Duration(i)*time.Second, made), auth) //nolint:errcheck // superseded ones are compacted
	}
	held := 0
	for _, o := range r.Ops() {
		if o.Signer == mallory.id {
			held++
		}
	}
	if held > 1 {
		t.Errorf("%d of Mallory's superseded takes held waiting for their chain, want at most 1", held)
	}
	v := mustRole(t, r, auth, "reg")
	if got := holders(v); !slices.Equal(got, holdersOf(k)) {
		t.Fatalf("holders %v, want K", got)
	}
	mustAdd(t, r, auth, k.sign(t, Draft{Kind: KindRelease, Role: "reg", Time: t0.Add(5 * time.Hour), Seen: v.Live}))
	if got := holders(mustRole(t, r, auth, "reg")); len(got) != 0 {
		t.Fatalf("holders %v after K's release", got)
	}
}
