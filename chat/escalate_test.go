package chat

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// forgeControl seals p as a control op of r, skipping every check Escalate
// and permitted make: what a modified client could send.
func forgeControl(t *testing.T, r *Replica, p *payload) []byte {
	t.Helper()
	pt, err := detcbor.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	env := r.newEnvelope()
	env.Urgent = p.Urgent // the header agrees with the payload, as chat's seal makes it
	ep, ok := r.controlEpoch(r.headView())
	if !ok {
		t.Fatal("no control epoch")
	}
	if err := e2e.SealControl(env, ep, r.control[ep], pt); err != nil {
		t.Fatal(err)
	}
	raw, err := r.signed(env)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func msgOf(t *testing.T, r *Replica, id crdt.OpID) Message {
	t.Helper()
	for _, m := range r.State().Messages {
		if m.ID == id {
			return m
		}
	}
	t.Fatalf("message %s not in the state", id)
	return Message{}
}

func urgent(t *testing.T, r *Replica, text string, within time.Duration) ([][]byte, crdt.OpID) {
	t.Helper()
	return must[crdt.OpID](t)(split(r.Send(text, SendOptions{Urgent: true, AckWithin: within})))
}

// TestEscalateBringsTargetIn: after the deadline the sender escalates to
// a colleague outside the conversation, who becomes a member, reads the
// message through the escalation's quote and acknowledges it; after that
// no further step is possible.
func TestEscalateBringsTargetIn(t *testing.T) {
	w := newWorld(t)
	alice, bob, dan := w.device("alice"), w.device("bob"), w.device("dan")
	ra, rb := unpack2(w.group("ward", alice, bob))
	envs, mid := urgent(t, ra, "bed 4 desaturating", time.Minute)
	deliver(t, envs, rb)
	if m := msgOf(t, rb, mid); m.AckWithin != time.Minute || !m.Deadline().Equal(m.Time.Add(time.Minute)) {
		t.Fatalf("deadline: %v %v", m.AckWithin, m.Deadline())
	}
	if _, err := ra.Escalate(mid, 1, []peer.ID{dan.ID}, "registrar"); !errors.Is(err, ErrNotEscalatable) {
		t.Fatalf("escalation before the deadline: %v", err)
	}
	w.now = w.now.Add(61 * time.Second)
	esc := ok2(t)(ra.Escalate(mid, 1, []peer.ID{dan.ID}, "registrar"))
	deliver(t, esc, rb)
	rd := w.join(dan, ra.Tag())
	deliver(t, history(ra), rd)
	for name, r := range map[string]*Replica{"alice": ra, "bob": rb, "dan": rd} {
		m := msgOf(t, r, mid)
		if len(m.Escalations) != 1 || m.Escalations[0].Step != 1 || !slices.Equal(m.Escalations[0].To, []peer.ID{dan.ID}) ||
			m.Escalations[0].By != alice.ID || m.Escalations[0].Label != "registrar" {
			t.Fatalf("%s: escalations %+v", name, m.Escalations)
		}
		if !slices.Contains(r.State().Members, dan.ID) {
			t.Fatalf("%s: dan is not a member", name)
		}
	}
	m := msgOf(t, rd, mid)
	if m.Text != "bed 4 desaturating" || m.QuotedBy != alice.ID || m.Sender != alice.ID || !m.Urgent {
		t.Fatalf("dan sees %+v", m)
	}
	ack := ok2(t)(rd.Receipt(Acknowledged, mid))
	deliver(t, ack, ra, rb)
	if m := msgOf(t, ra, mid); !m.Acknowledged() || m.Receipts[dan.ID] != Acknowledged {
		t.Fatalf("alice does not see dan's acknowledgement: %+v", m.Receipts)
	}
	w.now = w.now.Add(time.Hour)
	if _, err := ra.Escalate(mid, 2, []peer.ID{bob.ID}, ""); !errors.Is(err, ErrNotEscalatable) {
		t.Fatalf("escalation of an acknowledged message: %v", err)
	}
}

// TestAckWithinBounds: the acknowledgement time is bounded, whole seconds,
// and for urgent messages only — in Send and in every replica's decoder.
func TestAckWithinBounds(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("ward", alice, bob))
	for _, o := range []SendOptions{
		{Urgent: true, AckWithin: 29 * time.Second},
		{Urgent: true, AckWithin: 25 * time.Hour},
		{Urgent: true, AckWithin: 90*time.Second + time.Millisecond},
		{Urgent: true, AckWithin: -time.Minute},
		{AckWithin: time.Minute},
	} {
		if _, err := ra.Send("x", o); !errors.Is(err, ErrAckWithin) {
			t.Fatalf("%+v: %v", o, err)
		}
	}
	envs, mid := urgent(t, ra, "default", 0)
	deliver(t, envs, rb)
	if m := msgOf(t, rb, mid); m.AckWithin != DefaultAckWithin {
		t.Fatalf("default ack within %v", m.AckWithin)
	}
	for _, p := range []payload{
		{Kind: kindText, Text: "x", Urgent: true, AckWithin: 5},
		{Kind: kindText, Text: "x", Urgent: true, AckWithin: 90000},
		{Kind: kindText, Text: "x", AckWithin: 60},
		{Kind: kindReact, Text: "x", Urgent: true, AckWithin: 60},
		{Kind: kindText, Text: "x", Step: 1},
	} {
		if err := p.check(); !errors.Is(err, ErrInvalidPayload) {
			t.Fatalf("%+v passes check: %v", p, err)
		}
	}
}

// escalationWorld: alice creates the conversation (admin), bob sends an
// urgent message, carol is a plain member, dan and eve are outside.
type escalationWorld struct {
	w                      *world
	alice, bob, carol, dan *Device
	eve                    *Device
	ra, rb, rc             *Replica
	mid                    crdt.OpID
	pool                   [][]byte
}

func newEscalationWorld(t *testing.T) *escalationWorld { return escalationWorldOf(t, true) }

// escalationWorldOf is newEscalationWorld; with adminSender unset, bob —
// the urgent message's sender — is a plain member.
func escalationWorldOf(t *testing.T, adminSender bool) *escalationWorld {
	w := newWorld(t)
	x := &escalationWorld{w: w, alice: w.device("alice"), bob: w.device("bob"), carol: w.device("carol"),
		dan: w.device("dan"), eve: w.device("eve")}
	x.ra, x.rb, x.rc = unpack3(w.group("ward", x.alice, x.bob, x.carol))
	// Bob, who sends the urgent message, is an admin: only admins
	// escalate (an escalation makes members, as an add does).
	if adminSender {
		deliver(t, ok2(t)(x.ra.Promote(x.bob.ID)), x.rb, x.rc)
	}
	x.pool = history(x.ra)
	envs, mid := urgent(t, x.rb, "sepsis bed 9", time.Minute)
	x.mid = mid
	x.pool = append(x.pool, envs...)
	deliver(t, envs, x.ra, x.rc)
	w.now = w.now.Add(2 * time.Minute)
	return x
}

func (x *escalationWorld) escalation(t *testing.T, from *Replica, step int, to ...*Device) payload {
	t.Helper()
	p := payload{Kind: kindEscalate, Target: x.mid[:], Step: uint32(step), Urgent: true, AckWithin: 60, Text: "sepsis bed 9"}
	var ids []peer.ID
	for _, d := range to {
		ids = append(ids, d.ID)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p.To = append(p.To, []byte(id))
	}
	return p
}

// refused hands a forged op to r and checks it changed neither the
// escalations of the message nor the members.
func (x *escalationWorld) refused(t *testing.T, raw []byte, r *Replica, what string) {
	t.Helper()
	before := msgOf(t, r, x.mid).Escalations
	members := r.State().Members
	if err := r.Receive(raw); err != nil && !benign(err) && !errors.Is(err, ErrInvalidPayload) {
		t.Fatalf("%s: %v", what, err)
	}
	if got := msgOf(t, r, x.mid).Escalations; len(got) != len(before) {
		t.Fatalf("%s: escalations %+v", what, got)
	}
	if got := r.State().Members; !slices.Equal(got, members) {
		t.Fatalf("%s: members changed to %v", what, got)
	}
}

// TestEscalationAttacks: who may escalate, and what, against forged ops
// a modified client could send.
func TestEscalationAttacks(t *testing.T) {
	t.Run("plain member", func(t *testing.T) {
		x := newEscalationWorld(t)
		if _, err := x.rc.Escalate(x.mid, 1, []peer.ID{x.dan.ID}, ""); err == nil {
			t.Fatal("a member neither sender nor admin escalated")
		}
		p := x.escalation(t, x.rc, 1, x.eve)
		x.refused(t, forgeControl(t, x.rc, &p), x.ra, "carol's forged escalation")
	})
	t.Run("removed member", func(t *testing.T) {
		x := newEscalationWorld(t)
		rm := ok2(t)(x.ra.Remove(x.bob.ID))
		deliver(t, rm, x.rc)
		// bob, not yet knowing, escalates his own message concurrently.
		p := x.escalation(t, x.rb, 1, x.eve)
		raw := forgeControl(t, x.rb, &p)
		x.refused(t, raw, x.ra, "escalation concurrent with the sender's removal")
		x.refused(t, raw, x.rc, "escalation concurrent with the sender's removal")
		deliver(t, rm, x.rb)
		if _, err := x.rb.Escalate(x.mid, 1, []peer.ID{x.eve.ID}, ""); err == nil {
			t.Fatal("removed member escalated")
		}
	})
	t.Run("non-urgent message", func(t *testing.T) {
		x := newEscalationWorld(t)
		envs, plain := must[crdt.OpID](t)(split(x.rb.Send("routine", SendOptions{})))
		deliver(t, envs, x.ra, x.rc)
		x.w.now = x.w.now.Add(time.Hour)
		if _, err := x.rb.Escalate(plain, 1, []peer.ID{x.eve.ID}, ""); !errors.Is(err, ErrNotEscalatable) {
			t.Fatalf("escalation of a routine message: %v", err)
		}
		p := x.escalation(t, x.rb, 1, x.eve)
		p.Target, p.Urgent, p.AckWithin = plain[:], false, 0
		if err := x.ra.Receive(forgeControl(t, x.rb, &p)); !errors.Is(err, ErrInvalidPayload) && !benign(err) {
			t.Fatalf("escalation quoting a routine message: %v", err)
		}
		// Quoting a routine message as urgent: the quote is the
		// escalator's word, and every device that reads the message
		// flags it.
		p = x.escalation(t, x.rb, 1, x.eve)
		p.Target = plain[:]
		deliver(t, [][]byte{forgeControl(t, x.rb, &p)}, x.ra)
		if f := x.ra.State().Flags[x.bob.ID]; f == "" {
			t.Fatal("a misquoting escalator is not flagged")
		}
	})
	t.Run("acknowledged message", func(t *testing.T) {
		x := newEscalationWorld(t)
		ack := ok2(t)(x.rc.Receipt(Acknowledged, x.mid))
		deliver(t, ack, x.ra, x.rb)
		if _, err := x.rb.Escalate(x.mid, 1, []peer.ID{x.eve.ID}, ""); !errors.Is(err, ErrNotEscalatable) {
			t.Fatalf("escalation of an acknowledged message: %v", err)
		}
		p := x.escalation(t, x.rb, 1, x.eve)
		x.refused(t, forgeControl(t, x.rb, &p), x.ra, "escalation with an acknowledgement in its past")
	})
	t.Run("forged step", func(t *testing.T) {
		x := newEscalationWorld(t)
		p := x.escalation(t, x.rb, 2, x.eve)
		x.refused(t, forgeControl(t, x.rb, &p), x.ra, "step 2 without step 1")
		if _, err := x.rb.Escalate(x.mid, 2, []peer.ID{x.eve.ID}, ""); !errors.Is(err, ErrNotEscalatable) {
			t.Fatalf("step 2 first: %v", err)
		}
		deliver(t, ok2(t)(x.rb.Escalate(x.mid, 1, []peer.ID{x.dan.ID}, "")), x.ra)
		p = x.escalation(t, x.rb, 1, x.eve)
		x.refused(t, forgeControl(t, x.rb, &p), x.ra, "step 1 again after step 1")
		p = x.escalation(t, x.rb, 17, x.eve)
		x.refused(t, forgeControl(t, x.rb, &p), x.ra, "step past the bound")
	})
	t.Run("before the deadline", func(t *testing.T) {
		x := newEscalationWorld(t)
		x.w.now = x.w.now.Add(-90 * time.Second)
		p := x.escalation(t, x.rb, 1, x.eve)
		x.refused(t, forgeControl(t, x.rb, &p), x.ra, "escalation before the deadline")
	})
}

// TestEscalationConcurrent: across a partition the sender and an admin
// escalate the same step at once — to the same colleague, or to two —
// and a recipient acknowledges concurrently. Whatever order the ops reach
// each replica in, every replica shows the same standing escalation (the
// lowest op ID), the colleague it names is alerted once (an alert keyed
// by message and step, as the conversations layer keys it), and the
// replicas converge.
func TestEscalationConcurrent(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { escalationConcurrent(t, seed) })
	}
}

func escalationConcurrent(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 19))
	x := newEscalationWorld(t)
	sameTarget := seed%2 == 0
	ackToo := seed%3 == 0
	var concurrent [][]byte
	concurrent = append(concurrent, ok2(t)(x.rb.Escalate(x.mid, 1, []peer.ID{x.dan.ID}, "registrar"))...)
	other := x.dan
	if !sameTarget {
		other = x.eve
	}
	concurrent = append(concurrent, ok2(t)(x.ra.Escalate(x.mid, 1, []peer.ID{other.ID}, "consultant"))...)
	if ackToo {
		concurrent = append(concurrent, ok2(t)(x.rc.Receipt(Acknowledged, x.mid))...)
	}
	all := slices.Concat(x.pool, concurrent)
	rd, re := x.w.join(x.dan, x.ra.Tag()), x.w.join(x.eve, x.ra.Tag())
	reps := []*Replica{x.ra, x.rb, x.rc, rd}
	if !sameTarget {
		reps = append(reps, re)
	}
	alerts := map[peer.ID]map[string]int{}
	for _, r := range reps {
		order := slices.Clone(all)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for pass := 0; pass < 2; pass++ { // a second pass for ops that opened late
			for _, e := range order {
				if err := r.Receive(e); err != nil && !benign(err) {
					t.Fatal(err)
				}
				if r != rd && r != re {
					continue
				}
				for _, m := range r.State().Messages {
					for _, esc := range m.Escalations {
						if slices.Contains(esc.To, r.dev.ID) {
							if alerts[r.dev.ID] == nil {
								alerts[r.dev.ID] = map[string]int{}
							}
							key := fmt.Sprint(m.ID, esc.Step)
							if alerts[r.dev.ID][key] == 0 {
								alerts[r.dev.ID][key] = 1
							}
						}
					}
				}
			}
		}
	}
	want := msgOf(t, x.ra, x.mid).Escalations
	if len(want) != 1 {
		t.Fatalf("escalations %+v", want)
	}
	lowest := idOf(concurrent[0])
	for _, e := range concurrent {
		if id := idOf(e); x.ra.ops[id].kind == kindEscalate && id.Compare(lowest) < 0 {
			lowest = id
		}
	}
	if want[0].ID != lowest {
		t.Fatal("the standing escalation is not the lowest op ID")
	}
	for i, r := range reps {
		got := msgOf(t, r, x.mid)
		if !reflectEqual(got.Escalations, want) {
			t.Fatalf("replica %d: escalations %+v, want %+v", i, got.Escalations, want)
		}
		if got.Acknowledged() != ackToo {
			t.Fatalf("replica %d: acknowledged %v", i, got.Acknowledged())
		}
		if r.State().Members[0] == "" || !slices.Equal(r.State().Members, x.ra.State().Members) {
			t.Fatalf("replica %d: members %v", i, r.State().Members)
		}
	}
	winner := want[0].To[0]
	if n := len(alerts[winner]); n != 1 {
		t.Fatalf("winner's target alerted for %d steps", n)
	}
	if ackToo {
		x.w.now = x.w.now.Add(time.Hour)
		if _, err := x.rb.Escalate(x.mid, 2, []peer.ID{x.carol.ID}, ""); !errors.Is(err, ErrNotEscalatable) {
			t.Fatalf("step 2 after a concurrent acknowledgement merged: %v", err)
		}
	}
}

// TestExpiredUnread: retention deletes an urgent message nobody read; its
// sender sees it expired unread, a read one does not.
func TestExpiredUnread(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("ward", alice, bob))
	deliver(t, ok2(t)(ra.SetRetention(time.Hour)), rb)
	// Read receipts cover the message and its past: the read one first.
	e1, read := urgent(t, ra, "bob reads this", 0)
	e2, unread := urgent(t, ra, "nobody reads this", 0)
	deliver(t, slices.Concat(e1, e2), rb)
	deliver(t, ok2(t)(rb.Receipt(Read, read)), ra)
	w.now = w.now.Add(2 * time.Hour)
	ra.Expire(w.now)
	st := ra.State()
	if len(st.ExpiredUnread) != 1 || st.ExpiredUnread[0].ID != unread {
		t.Fatalf("expired unread %+v (unread %s, read %s)", st.ExpiredUnread, unread, read)
	}
	if len(rb.State().ExpiredUnread) != 0 {
		t.Fatal("a recipient lists another's message as its own expired unread")
	}
}
