package conversations

import (
	"errors"
	"slices"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
)

// TestAuditAddVoidedLater: mallory (admin) adds eve while alice
// concurrently removes mallory. Bob takes in the add first — eve joins,
// recorded as member_added — then the removal, which voids the add: the
// trail records mallory removed and eve's add voided, and a refused op
// (mallory's edit of alice's message, not hers to edit) as refused.
func TestAuditAddVoidedLater(t *testing.T) {
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
	msg, err := ra.Send("obs", chat.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool = append(pool, msg.Envelopes...)
	rm := chat.Join(mallory.dev, dir, ra.Tag())
	for _, raw := range pool {
		if err := rm.Receive(raw); err != nil && !errors.Is(err, chat.ErrNotAuthorised) {
			t.Fatalf("mallory: %v", err)
		}
	}
	if !s.Deliver(ra.Tag(), rt6Checked(t, pool), alice.id) {
		t.Fatal("bob did not join")
	}
	v.take()
	add, err := rm.Add(eve.id)
	if err != nil {
		t.Fatal(err)
	}
	s.Deliver(ra.Tag(), rt6Checked(t, add.Envelopes), mallory.id)
	if !recorded(v.take(), audit.MemberAdded, eve.id, add.ID) {
		t.Fatal("eve's standing add is not recorded as member_added")
	}
	rem, err := ra.Remove(mallory.id)
	if err != nil {
		t.Fatal(err)
	}
	s.Deliver(ra.Tag(), rt6Checked(t, rem.Envelopes), alice.id)
	st, err := s.State(ra.ID())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.Members {
		if m == eve.id || m == mallory.id {
			t.Fatalf("setup: %s still a member", m)
		}
	}
	evs := v.take()
	if !recorded(evs, audit.MemberRemoved, mallory.id, rem.ID) || !recorded(evs, audit.MemberVoided, eve.id, crdt0) {
		t.Fatalf("after the removal: %+v, want mallory removed and eve's add voided", evs)
	}
	// Voided ops never show as what they claim: mallory's message and her
	// removal of bob, both concurrent with her own removal. The message
	// is not even decrypted (nothing is recorded); the removal, a control
	// op this device reads, is recorded as refused, by mallory.
	late, err := rm.Send("after removal", chat.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kick, err := rm.Remove(bob.id)
	if err != nil {
		t.Fatal(err)
	}
	s.Deliver(ra.Tag(), rt6Checked(t, append(late.Envelopes, kick.Envelopes...)), mallory.id)
	evs = v.take()
	if recorded(evs, audit.Received, mallory.id, late.ID) || recorded(evs, audit.MemberRemoved, bob.id, kick.ID) ||
		!recorded(evs, audit.Refused, mallory.id, kick.ID) {
		t.Fatalf("mallory's voided ops: %+v", evs)
	}
}

var crdt0 crdt.OpID

// recorded: evs hold an event of kind about p naming op (or naming no op,
// if op is zero).
func recorded(evs []audit.Event, kind audit.Kind, p peer.ID, op crdt.OpID) bool {
	for _, ev := range evs {
		if ev.Kind != kind || ev.IDs.Peer != p.String() {
			continue
		}
		if op.IsZero() && len(ev.IDs.Ops) == 0 {
			return true
		}
		if !op.IsZero() && slices.Contains(ev.IDs.Ops, op.String()) {
			return true
		}
	}
	return false
}
