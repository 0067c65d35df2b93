package conversations

// Red-team round 6: what the audit trail hears from this layer.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"sync"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/mesh"
)

// rt6Victim is bob's service, recording what it tells the audit trail,
// in a conversation alice (admin) created with him.
type rt6Victim struct {
	mu  sync.Mutex
	evs []audit.Event
}

func (v *rt6Victim) record(evs []audit.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.evs = append(v.evs, evs...)
}

func (v *rt6Victim) take() []audit.Event {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := v.evs
	v.evs = nil
	return out
}

func rt6Setup(t *testing.T) (alice *rtDev, ra *chat.Replica, s *Service, v *rt6Victim) {
	t.Helper()
	alice, bob := rtNewDev(t), rtNewDev(t)
	dir := rtDir{alice.id: alice, bob.id: bob}
	v = &rt6Victim{}
	s, err := Open(Config{Device: bob.dev, Directory: dir, Store: dssync.MutexWrap(ds.NewMapDatastore()), Audit: v.record})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ra, out, err := chat.Create(alice.dev, dir, "ward", []peer.ID{bob.id})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Deliver(ra.Tag(), rt6Checked(t, out.Envelopes), alice.id) {
		t.Fatal("bob did not join")
	}
	v.take()
	return alice, ra, s, v
}

func rt6Checked(t *testing.T, raws [][]byte) []mesh.Checked {
	t.Helper()
	var out []mesh.Checked
	for _, raw := range raws {
		out = append(out, rtChecked(t, raw))
	}
	return out
}

// TestRedteam6MalformedMemberPoisonsAuditBatch
//
// Attack: a colleague who is admin of a conversation (modified code, or
// simply the public chat API) removes a "member" whose peer ID is 120
// arbitrary bytes — nobody, so nothing changes in the conversation — and
// publishes it together with an ordinary message. (A non-admin can do the
// same with a hand-made add op: the replica refuses it, but Describe still
// reports it and the audit layer ignores Standing.) Nothing bounds or
// validates the Member bytes, so auditOps makes a member_removed event
// whose Peer is ~164 characters, longer than audit.MaxID.
//
// Impact: audit.Log.Append refuses a whole call if one event is invalid
// (ErrInvalid), and the device's Trail appends everything it drained from
// its queue (>= 256 events, from every source) in one call. So one bogus
// op makes every receiving device lose the audit entries of everything
// recorded alongside it (only a "failed" count says so) — here the "received" entry of the
// sender's own message: a colleague can post a clinical message that no
// recipient's audit trail ever records. Breaks "recording never loses"
// and the trail's completeness.
func TestRedteam6MalformedMemberPoisonsAuditBatch(t *testing.T) {
	alice, ra, s, v := rt6Setup(t)
	msg, err := ra.Send("give 10mg", chat.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rm, err := ra.Remove(peer.ID(bytes.Repeat([]byte{0xfe}, 120)))
	if err != nil {
		t.Fatal(err)
	}
	s.Deliver(ra.Tag(), rt6Checked(t, append(msg.Envelopes, rm.Envelopes...)), alice.id)
	evs := v.take()
	received := false
	for _, ev := range evs {
		if ev.Kind == audit.Received {
			for _, o := range ev.IDs.Ops {
				received = received || o == msg.ID.String()
			}
		}
	}
	if !received {
		t.Fatalf("no received event for the message: %+v", evs)
	}
	// Append what was recorded, in one call, as the Trail does.
	l, err := audit.Open(context.Background(), dssync.MutexWrap(ds.NewMapDatastore()), ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(context.Background(), evs...); err != nil {
		t.Fatalf("the audit entries of this delivery (the received message included) are lost: %v", err)
	}
}

// TestRedteam6AppliedLogCapLosesReceived
//
// Attack: a member withholds its first message and publishes the next
// 4,199 (sync hands them over in batches of at most 2,048: the DAG holds
// them waiting for their dependency), then the first one. All 4,200 are
// applied in one Deliver. (The same happens to an honest device that was
// offline in a basement when the missing op finally arrives.)
//
// Impact: the replica's applied log keeps at most 4,096 ops between two
// TakeApplied calls and silently forgets the rest, so more than a hundred
// received messages never reach the audit trail — and not even the
// trail's Dropped/Failed counters show it. Breaks "recording never loses"
// (the loss is neither recorded nor counted).
func TestRedteam6AppliedLogCapLosesReceived(t *testing.T) {
	alice, ra, s, v := rt6Setup(t)
	const n = 4200
	var envs [][]byte
	want := map[string]bool{}
	for i := range n {
		o, err := ra.Send("obs "+string(rune('a'+i%26)), chat.SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, o.Envelopes...)
		want[o.ID.String()] = true
	}
	rest := envs[1:]
	for len(rest) > 0 {
		k := min(len(rest), 2048)
		s.Deliver(ra.Tag(), rt6Checked(t, rest[:k]), alice.id)
		rest = rest[k:]
	}
	s.Deliver(ra.Tag(), rt6Checked(t, envs[:1]), alice.id)
	got := 0
	for _, ev := range v.take() {
		if ev.Kind != audit.Received {
			continue
		}
		for _, o := range ev.IDs.Ops {
			if want[o] {
				got++
				delete(want, o)
			}
		}
	}
	if got != n {
		t.Fatalf("%d of %d received messages reached the audit trail", got, n)
	}
}

// TestRedteam6VoidAddRecordedAsJoin
//
// Attack: mallory, an admin whom the creator removes, adds eve without
// having seen her own removal (or says she did not: she chooses her
// deps). Every replica voids the add once it knows the removal — eve
// never joins and gets no key — but auditOps ignores OpSummary.Standing
// and records member_added eve (likewise for unauthorised adds, edits of
// others' messages, … that replicas refuse).
//
// Impact: every honest member's signed, "tamper-evident" trail states
// that eve joined the conversation, which never happened: a removed (or
// non-admin, with a hand-made op) colleague writes false membership
// history into other devices' audit trails, and an auditor trusting the
// trail concludes eve had access to the clinical conversation.
func TestRedteam6VoidAddRecordedAsJoin(t *testing.T) {
	alice, bob, mallory, eve := rtNewDev(t), rtNewDev(t), rtNewDev(t), rtNewDev(t)
	dir := rtDir{alice.id: alice, bob.id: bob, mallory.id: mallory, eve.id: eve}
	v := &rt6Victim{}
	s, err := Open(Config{Device: bob.dev, Directory: dir, Store: dssync.MutexWrap(ds.NewMapDatastore()), Audit: v.record})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ra, out, err := chat.Create(alice.dev, dir, "ward", []peer.ID{bob.id, mallory.id})
	if err != nil {
		t.Fatal(err)
	}
	pool := out.Envelopes
	pr, err := ra.Promote(mallory.id)
	if err != nil {
		t.Fatal(err)
	}
	pool = append(pool, pr.Envelopes...)
	rm := chat.Join(mallory.dev, dir, ra.Tag())
	for _, raw := range pool {
		if err := rm.Receive(raw); err != nil && !errors.Is(err, chat.ErrNotAuthorised) {
			t.Fatalf("mallory: %v", err)
		}
	}
	// Concurrently: alice removes mallory; mallory adds eve.
	rem, err := ra.Remove(mallory.id)
	if err != nil {
		t.Fatal(err)
	}
	add, err := rm.Add(eve.id)
	if err != nil {
		t.Fatalf("mallory adds eve: %v", err)
	}
	if !s.Deliver(ra.Tag(), rt6Checked(t, append(pool, rem.Envelopes...)), alice.id) {
		t.Fatal("bob did not join")
	}
	v.take()
	s.Deliver(ra.Tag(), rt6Checked(t, add.Envelopes), mallory.id)
	st, err := s.State(ra.ID())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.Members {
		if m == eve.id {
			t.Fatal("setup: eve is a member on bob's replica")
		}
	}
	for _, ev := range v.take() {
		if ev.Kind == audit.MemberAdded && ev.IDs.Peer == eve.id.String() {
			t.Fatalf("bob's audit trail records that eve joined; she never did: %+v", ev)
		}
	}
}

// rt6FlakyStore fails Sync while fail is set (a full or failing disk).
type rt6FlakyStore struct {
	ds.Batching
	mu   sync.Mutex
	fail bool
}

func (f *rt6FlakyStore) set(v bool) { f.mu.Lock(); f.fail = v; f.mu.Unlock() }

func (f *rt6FlakyStore) Sync(ctx context.Context, k ds.Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errors.New("fsync: input/output error")
	}
	return f.Batching.Sync(ctx, k)
}

// TestRedteam6SentAfterFailedSaveNeverAudited
//
// Attack: none needed beyond a store that fails once (a full disk — or a
// local user filling the partition). Send fails to save; by design the
// op stays in the replica (sync may fetch it from memory) and its writes
// are retried with the next save, which succeeds.
//
// Impact: do records "sent" only when its own save succeeded, and the
// later save that does persist (and lets sync hand out) the first message
// records only its own op. A message that left the device, and is in its
// store, has no "sent" entry in its audit trail: recording loses events.
func TestRedteam6SentAfterFailedSaveNeverAudited(t *testing.T) {
	alice, bob := rtNewDev(t), rtNewDev(t)
	dir := rtDir{alice.id: alice, bob.id: bob}
	st := &rt6FlakyStore{Batching: dssync.MutexWrap(ds.NewMapDatastore())}
	v := &rt6Victim{}
	s, err := Open(Config{Device: bob.dev, Directory: dir, Store: st, Audit: v.record})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, err := s.Create("ward", []peer.ID{alice.id})
	if err != nil {
		t.Fatal(err)
	}
	st.set(true)
	if _, err := s.Send(id, "first", chat.SendOptions{}); err == nil {
		t.Fatal("setup: the first send saved")
	}
	st.set(false)
	if _, err := s.Send(id, "second", chat.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	state, err := s.State(id)
	if err != nil {
		t.Fatal(err)
	}
	sent := map[string]bool{}
	for _, ev := range v.take() {
		if ev.Kind == audit.Sent {
			for _, o := range ev.IDs.Ops {
				sent[o] = true
			}
		}
	}
	for _, m := range state.Messages {
		if m.Sender == bob.id && !sent[m.ID.String()] {
			t.Fatalf("message %q (%s) is saved and offered to sync but has no sent entry", m.Text, m.ID)
		}
	}
}
