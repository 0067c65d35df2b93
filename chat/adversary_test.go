package chat

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// TestAdversarial: four honest replicas (two admins) and two hostile
// members — one of them sometimes an admin — who, at random points, get
// removed and keep acting from before their removal, forge welcomes with
// any holder list, backdate, equivocate, replay, and send huge chain
// indexes with garbage bodies. Everything is delivered in random order
// with duplicates, then synced to a fixed point. Then:
//
//	(a) every honest replica shows the same conversation;
//	(b) no op made after a hostile member's removal (in causal order) opens
//	    with any key the hostile member holds, its forged epochs included;
//	(c) the group has an admin (honest admins never leave here);
//	(d) key state stays under its bound, and every honest replica restarts
//	    from its persisted state to the same conversation.
//
// MEDMESH_SEEDS sets the number of seeds (default 200).
func TestAdversarial(t *testing.T) {
	seeds := 200
	if s := os.Getenv("MEDMESH_SEEDS"); s != "" {
		seeds, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		seeds = 20
	}
	t.Run("seeds", func(t *testing.T) {
		for seed := range uint64(seeds) {
			t.Run(fmt.Sprint(seed), func(t *testing.T) {
				t.Parallel()
				adversarial(t, seed)
			})
		}
	})
	// Pairs skipped because one replica could not read a control op the
	// other could must stay rare, or the property says little.
	if n := skipped.Load(); n*4 > int64(seeds) {
		t.Errorf("%d of %d seeds compared fewer replicas: key possession diverges too often", n, seeds)
	}
	t.Logf("replica pairs not compared: %d in %d seeds", skipped.Load(), seeds)
}

type persisted struct {
	store *crdt.MemStore
	plain mapPlain
}

type hostile struct {
	r       *Replica
	offset  time.Duration // its clock's lie
	blocked map[crdt.OpID]bool
	removed bool
}

func adversarial(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	w := newWorld(t)
	honest := []*Device{w.device("a0"), w.device("a1"), w.device("m2"), w.device("m3")}
	bad := []*Device{w.device("h1"), w.device("h2")}
	x := w.device("x") // holds no replica: membership churn
	ids := []peer.ID{honest[1].ID, honest[2].ID, honest[3].ID, bad[0].ID, bad[1].ID}
	disks := map[*Replica]persisted{}
	opts := func() ([]Option, persisted) {
		p := persisted{crdt.NewMemStore(), mapPlain{}}
		return []Option{WithClock(w.clock), WithStore(p.store), WithPlaintexts(p.plain)}, p
	}
	o, p := opts()
	r0, pool, err := splitCreate(Create(honest[0], w, "adversarial", ids, o...))
	if err != nil {
		t.Fatal(err)
	}
	disks[r0] = p
	reps := []*Replica{r0}
	for _, d := range honest[1:] {
		o, p := opts()
		r := Join(d, w, r0.Tag(), o...)
		disks[r] = p
		reps = append(reps, r)
	}
	var hs []*hostile
	for _, d := range bad {
		h := &hostile{blocked: map[crdt.OpID]bool{}}
		h.r = Join(d, w, r0.Tag(), WithClock(func() time.Time { return w.now.Add(h.offset) }))
		hs = append(hs, h)
	}
	all := func() []*Replica {
		out := slices.Clone(reps)
		for _, h := range hs {
			out = append(out, h.r)
		}
		return out
	}
	give := func(r *Replica, envs [][]byte) {
		for _, h := range hs {
			if h.r == r {
				envs = slices.DeleteFunc(slices.Clone(envs), func(e []byte) bool { return h.blocked[idOf(e)] })
			}
		}
		for _, e := range envs {
			r.Receive(e) // errors are the point here
		}
	}
	for _, r := range all()[1:] {
		give(r, pool)
	}
	promote := func(d *Device) {
		out, _, err := split(r0.Promote(d.ID))
		if err != nil {
			t.Fatal(err)
		}
		pool = append(pool, out...)
		for _, r := range all() {
			give(r, out)
		}
	}
	promote(honest[1])
	if rng.IntN(2) == 0 {
		promote(bad[0])
	}

	for range 32 {
		w.now = w.now.Add(time.Duration(rng.IntN(30)) * time.Second)
		var out [][]byte
		if rng.IntN(10) < 3 {
			h := hs[rng.IntN(len(hs))]
			out = hostileStep(t, rng, h, hs, honest, pool)
		} else {
			i := rng.IntN(len(reps))
			var err error
			out, err = honestStep(reps[i], rng, hs, x.ID)
			if err != nil && !benign(err) && !errIs(err, ErrNoSuchMessage, ErrNotMember) {
				t.Fatalf("honest replica %d: %v", i, err)
			}
			// A removed hostile member never hears of its removal.
			if len(out) > 0 {
				if info := reps[i].ops[idOf(out[0])]; info != nil && info.kind == kindRemove {
					for _, h := range hs {
						if peer.ID(info.p.Member) == h.r.dev.ID {
							h.blocked[idOf(out[0])], h.removed = true, true
						}
					}
				}
			}
		}
		pool = append(pool, out...)
		for _, r := range all() {
			for range rng.IntN(5) {
				give(r, [][]byte{pool[rng.IntN(len(pool))]})
			}
		}
	}
	// Everything reaches the honest replicas, in random orders, again and
	// again as sync would offer it, until nothing changes.
	sync := func() {
		t.Helper()
		for round := 0; ; round++ {
			changed := false
			for _, r := range reps {
				before := len(r.IDs())
				order := slices.Clone(pool)
				rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
				give(r, append(order, order[:len(order)/4]...))
				changed = changed || len(r.IDs()) != before
			}
			if !changed {
				break
			}
			if round > 10 {
				t.Fatal("no fixed point after 10 sync rounds")
			}
		}
	}
	sync()

	// Then each honest member writes once more — as members do — and that
	// is synced too: a member whose removal turned out void gets, with the
	// next rekey, the control keys of the epochs made while it was out.
	for range 2 {
		for _, r := range reps {
			out, _, err := split(r.Send("settle", SendOptions{}))
			if err != nil && !errIs(err, ErrNotMember, ErrBlind) {
				t.Fatalf("settle: %v", err)
			}
			pool = append(pool, out...)
		}
		sync()
	}

	// (a) one conversation, on every honest replica that is still a member
	// (a hostile admin may remove honest ones: they read no later epoch).
	var in []*Replica
	for _, r := range reps {
		if r.headView().members[r.dev.ID] {
			in = append(in, r)
		}
	}
	// ... and was never the target of an authorised removal: a member
	// re-added reads nothing from while it was out, by design; one whose
	// removal turned out void lacks the control keys of the epochs made
	// while it looked removed until a member holding them rekeys (see the
	// package doc's known limitations).
	ref := in[0]
	in = slices.DeleteFunc(in, func(r *Replica) bool { return targeted(ref, r.dev.ID) })
	if len(in) == 0 {
		t.Fatal("every honest member was removed")
	}
	want := canon(in[0].State())
	for i, r := range in[1:] {
		if !sameReadable(in[0], r) {
			// One holds a control key the other lacks (it was out of an
			// epoch and no rekey has handed it on yet): the rule is a
			// function of the DAG and of what each can read.
			t.Logf("honest replica %d reads other control ops: not compared", i+1)
			skipped.Add(1)
			continue
		}
		if got := canon(r.State()); !reflect.DeepEqual(got, want) {
			explain(t, in[0], r)
			t.Fatalf("honest replica %d diverged:\n got %+v\nwant %+v", i+1, got, want)
		}
	}
	// (b) nothing made after a removal opens with the removed member's keys
	// — a removal the sender could see was effective: one later concurrent
	// information made effective is outside what any sender can honour.
	for _, h := range hs {
		for id, info := range r0.ops {
			if info.env == nil || info.raw == nil || r0.membersOf(info.before).members[h.r.dev.ID] || !removedIn(r0, info.before, h.r.dev.ID) ||
				!slices.ContainsFunc(honest, func(d *Device) bool { return d.ID == info.sender }) {
				continue
			}
			got := opens(h.r, [][]byte{info.raw})
			if len(got) == 0 || !knewRemoved(t, w, r0, id, h.r.dev.ID) {
				continue
			}
			t.Fatalf("hostile %s reads %q written after its removal", w.names[h.r.dev.ID], got)
		}
	}
	for _, r := range reps {
		st := r.State()
		// (c) an admin.
		if len(st.Admins) == 0 {
			t.Fatalf("no admin left: members %v", st.Members)
		}
		// (d) bounded key state, and a restart gives the same view.
		if n := r.recv.Skipped(); n > e2e.MaxSkippedTotal {
			t.Fatalf("%d skipped keys", n)
		}
		keys, err := r.Keys()
		if err != nil || len(keys) > 1<<20 {
			t.Fatalf("key state of %d bytes: %v", len(keys), err)
		}
		d := disks[r]
		back, err := Restore(r.dev, w, keys, WithClock(w.clock), WithStore(d.store), WithPlaintexts(d.plain))
		if err != nil {
			t.Fatalf("restore: %v", err)
		}
		if !sameReadable(r, back) {
			t.Logf("restored replica reads other control ops: not compared")
			skipped.Add(1)
			continue
		}
		if got := canon(back.State()); !reflect.DeepEqual(got, canon(st)) {
			explain(t, r, back)
			t.Fatalf("restored replica differs:\n got %+v\nwant %+v", got, canon(st))
		}
	}
}

// skipped counts replica pairs not compared (TestAdversarial reports it).
var skipped atomic.Int64

// sameReadable reports whether a and b read the same control ops of the
// epochs that count (authorised welcomes: ops in others are void anyway).
func sameReadable(a, b *Replica) bool {
	for id, x := range a.ops {
		y := b.ops[id]
		if y == nil {
			return false
		}
		if x.env == nil || x.env.Kind != e2e.KindControl {
			continue
		}
		wa, wb := a.ops[crdt.OpID(x.epoch)], b.ops[crdt.OpID(x.epoch)]
		if (wa != nil && wa.valid) || (wb != nil && wb.valid) {
			if (x.p == nil) != (y.p == nil) {
				return false
			}
		}
	}
	return len(a.ops) == len(b.ops)
}

// targeted reports whether r holds an authorised (pass 1) removal of p.
func targeted(r *Replica, p peer.ID) bool {
	for _, info := range r.ops {
		if info.p != nil && info.kind == kindRemove && peer.ID(info.p.Member) == p {
			return true
		}
	}
	return false
}

// knewRemoved replays an op's causal past into a fresh replica of its
// sender's device and reports whether p was out of the group there: what
// the sender could know when it wrote.
func knewRemoved(t *testing.T, w *world, r *Replica, op crdt.OpID, p peer.ID) bool {
	t.Helper()
	fresh := Join(w.devices[r.ops[op].sender], w, r.tag, WithClock(w.clock))
	for _, id := range r.dag.Order() {
		if r.inPast(id, op) {
			if raw, ok := r.Envelope(id); ok {
				fresh.Receive(raw)
			}
		}
	}
	return !fresh.headView().members[p]
}

// removedIn reports whether an effective removal of p is in view v.
func removedIn(r *Replica, v *view, p peer.ID) bool {
	for _, rm := range r.effective[p] {
		if v.has(rm) {
			return true
		}
	}
	return false
}

func errIs(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// honestStep is one honest action: messages, reactions, receipts, edits,
// and (admins) removing a hostile member or churning x.
func honestStep(r *Replica, rng *rand.Rand, hs []*hostile, x peer.ID) ([][]byte, error) {
	m := r.headView()
	if m.admins[r.dev.ID] && rng.IntN(6) == 0 {
		h := hs[rng.IntN(len(hs))]
		if m.members[h.r.dev.ID] && !h.removed {
			out, _, err := split(r.Remove(h.r.dev.ID))
			return out, err
		}
	}
	if m.admins[r.dev.ID] && rng.IntN(8) == 0 {
		if m.members[x] {
			out, _, err := split(r.Remove(x))
			return out, err
		}
		out, _, err := split(r.Add(x))
		return out, err
	}
	return randomOp(r, rng, x, x)
}

// hostileStep is one hostile action, from whatever its replica holds.
func hostileStep(t *testing.T, rng *rand.Rand, h *hostile, hs []*hostile, honest []*Device, pool [][]byte) [][]byte {
	r := h.r
	m := r.headView()
	members := slices.Collect(func(yield func(peer.ID) bool) {
		for p := range m.members {
			if !yield(p) {
				return
			}
		}
	})
	slices.Sort(members)
	switch rng.IntN(8) {
	case 0: // backdate or run ahead
		h.offset = time.Duration(rng.IntN(4*60)-3*60) * time.Minute
		out, _, _ := split(r.Send("hostile, clock moved", SendOptions{}))
		return out
	case 1: // a welcome with any holder list
		if r.conv.IsZero() {
			return nil
		}
		var holders []peer.ID
		for _, p := range members {
			if rng.IntN(3) > 0 {
				holders = append(holders, p)
			}
		}
		if len(holders) == 0 {
			holders = []peer.ID{honest[0].ID}
		}
		return [][]byte{forgeWelcome(t, r, holders, time.Duration(rng.IntN(120)-60)*time.Minute)}
	case 2: // equivocate
		ep, ok := r.current(m)
		if !ok {
			return nil
		}
		c1, c2 := *r.send[ep], *r.send[ep]
		r.send[ep].SkipTo(c1.Index + 1)
		return [][]byte{sealRaw(t, r, ep, &c1, "10 mg", 0), sealRaw(t, r, ep, &c2, "100 mg", 0)}
	case 3: // huge index, garbage body, in any epoch it knows
		eps := r.recv.Epochs()
		if len(eps) == 0 {
			return nil
		}
		return [][]byte{sealRaw(t, r, eps[rng.IntN(len(eps))], nil, "", uint32(rng.IntN(1<<31)))}
	case 4: // replay
		return [][]byte{pool[rng.IntN(len(pool))]}
	case 5: // admin powers, if it has any in its own view
		if !m.admins[r.dev.ID] {
			return nil
		}
		victim := honest[rng.IntN(len(honest))].ID
		other := hs[rng.IntN(len(hs))].r.dev.ID
		var out [][]byte
		switch rng.IntN(3) {
		case 0:
			out, _, _ = split(r.Remove(victim))
		case 1:
			out, _, _ = split(r.Add(other))
		default:
			out, _, _ = split(r.Promote(other))
		}
		return out
	default:
		out, _ := randomOp(r, rng, honest[2].ID, honest[3].ID)
		return out
	}
}

// explain logs the ops two replicas judge differently and the messages
// they show differently.
func explain(t *testing.T, a, b *Replica) {
	t.Helper()
	desc := func(i *opInfo) string {
		if i == nil {
			return "absent"
		}
		return fmt.Sprintf("kind %d valid %v stub %v read %v reason %v", i.kind, i.valid, i.stub, i.p != nil, i.reason)
	}
	for id, x := range a.ops {
		if dx, dy := desc(x), desc(b.ops[id]); dx != dy {
			t.Logf("op %s\n  a: %s\n  b: %s", id.String()[:8], dx, dy)
		}
	}
	ca, cb := canon(a.State()), canon(b.State())
	for i := range max(len(ca.Messages), len(cb.Messages)) {
		var ma, mb canonMsg
		if i < len(ca.Messages) {
			ma = ca.Messages[i]
		}
		if i < len(cb.Messages) {
			mb = cb.Messages[i]
		}
		if !reflect.DeepEqual(ma, mb) {
			t.Logf("message %d:\n  a %+v\n  b %+v", i, ma, mb)
		}
	}
}
