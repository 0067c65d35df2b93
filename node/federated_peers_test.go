package node

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// TestFederatedPrekeyExchange: a federated peer's signed prekey reaches
// the device of the other trust that admitted it (and back), so a member
// can seal a welcome to it without any directory; the protocol serves
// nobody else — not our own staff, whose prekeys come with the directory.
// A colleague who never met the federated device learns it from one who
// did; a withdrawn record forgets it at once.
func TestFederatedPrekeyExchange(t *testing.T) {
	w := newFedWorld(t)
	b1 := w.startB(t, w.b.enrolIn(t, "bea", "Emergency", "clinician"))
	connectTo(t, b1, w.a1)
	eventually(t, 20*time.Second, "a1 and b1 admit each other as federated", func() bool {
		return w.a1.IsFederated(b1.ID()) && b1.IsFederated(w.a1.ID())
	})
	own, err := b1.Recipient(b1.ID(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "a1 holds b1's signed prekey", func() bool {
		r, err := w.a1.Recipient(b1.ID(), time.Now())
		return err == nil && r.PrekeyID == own.PrekeyID && bytes.Equal(r.KEM, own.KEM)
	})
	eventually(t, 20*time.Second, "b1 holds a1's", func() bool {
		r, err := b1.Recipient(w.a1.ID(), time.Now())
		return err == nil && r.PrekeyID != 0
	})
	if known, revoked := w.a1.KnownFederated(b1.ID()); !known || revoked {
		t.Fatalf("a1: b1 known %v revoked %v", known, revoked)
	}
	if !w.a1.Foreign(b1.ID()) || w.a1.Foreign(w.a2.ID()) {
		t.Fatal("Foreign does not tell b1 from a2")
	}
	if info, ok := w.a1.FederatedPeer(b1.ID()); !ok || info.Name != "bea" || info.Department != "Emergency" || !strings.HasPrefix(info.OtherTrust, "General Hospital [") {
		t.Fatalf("a1's view of b1: %+v %v", info, ok)
	}
	if l := w.a1.FederatedPeers(); len(l) != 1 || l[0].PeerID != b1.ID().String() {
		t.Fatalf("a1 lists %+v", l)
	}
	for _, s := range w.a1.Directory() {
		if s.PeerID == b1.ID().String() {
			t.Fatal("b1 is in a1's directory")
		}
	}
	// Served to a federated peer, never to our own staff.
	if !askFor(t, b1, w.a1, ProtoFedPrekey) {
		t.Fatal("a1 does not serve its prekey to b1")
	}
	if askFor(t, w.a2, w.a1, ProtoFedPrekey) {
		t.Fatal("a1 serves fedprekey to its own staff")
	}
	// a2 never met b1: a1 told it (fedbook), prekey included.
	eventually(t, 20*time.Second, "a2 can seal to b1's prekey", func() bool {
		r, err := w.a2.Recipient(b1.ID(), time.Now())
		return err == nil && r.PrekeyID == own.PrekeyID
	})
	// A withdrawal: b1 dropped and forgotten as a sender and recipient.
	submitFed(t, w.a1, w.a.record(t, w.b, emergencyClinicians, 2, true))
	eventually(t, 20*time.Second, "a1 drops b1", func() bool { return !w.a1.IsFederated(b1.ID()) })
	if known, _ := w.a1.KnownFederated(b1.ID()); known {
		t.Fatal("b1 still known after the withdrawal")
	}
	if _, err := w.a1.Recipient(b1.ID(), time.Now()); err == nil {
		t.Fatal("a1 can seal to b1 after the withdrawal")
	}
	if len(w.a1.FederatedPeers()) != 0 {
		t.Fatal("a1 still lists b1")
	}
	eventually(t, 20*time.Second, "a2 forgets b1 once the withdrawal reaches it", func() bool {
		known, _ := w.a2.KnownFederated(b1.ID())
		return !known
	})
}

// TestFederatedBookAndIntroGated: a federated peer cannot use the book of
// our own staff (/medmesh/fedbook/1), and our own staff cannot introduce
// on /medmesh/fedintro/1; a federated peer introducing a device of our own
// trust (not of its own) gets it refused.
func TestFederatedBookAndIntroGated(t *testing.T) {
	w := newFedWorld(t)
	b1 := w.startB(t, w.b.enrolIn(t, "bea", "Emergency", "clinician"))
	connectTo(t, b1, w.a1)
	eventually(t, 20*time.Second, "a1 and b1 admit each other as federated", func() bool {
		return w.a1.IsFederated(b1.ID()) && b1.IsFederated(w.a1.ID())
	})
	eventually(t, 20*time.Second, "a2 learns of b1 from a1", func() bool { k, _ := w.a2.KnownFederated(b1.ID()); return k })
	if askFor(t, b1, w.a1, ProtoFedBook) {
		t.Fatal("a1 answers a federated peer on fedbook")
	}
	if askFor(t, w.a2, w.a1, ProtoFedIntro) {
		t.Fatal("a1 answers its own staff on fedintro")
	}
	// b1 introduces a2 (a device of trust A) to a1: refused.
	raw, err := detcbor.Marshal(dirEntry{Chain: encodeChain(w.a2.cfg.Chain)})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.a1.takeIntroduced(raw, w.a1.adm.federation(b1.ID()).Other); err == nil {
		t.Fatal("a1 takes a device of its own trust introduced by b1")
	}
	if w.a1.Foreign(w.a2.ID()) {
		t.Fatal("a2 became foreign to a1")
	}
}
