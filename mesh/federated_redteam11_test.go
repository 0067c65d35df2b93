package mesh_test

import (
	"bytes"
	"context"
	"errors"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/identity"
	"slices"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/mesh"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/testnet"
)

// TestRedteam11FederatedPeerCreatesConversationWithOurStaff: scope
// "invited" admits a device of trust B only to conversations one of OUR
// members creates and invites it to (issue 18 item 3, conversations/
// federated.go: "such a device can never invite anyone"). Bea creates a
// conversation of her own — she is its creator and admin — and seals a
// welcome to alice; alice's mesh takes it from bea's side of alice's inbox
// (federatedSender: "a welcome into our own inbox") and alice's device
// joins, so bea now holds an admin seat in a conversation with our staff
// and can add whomever she likes.
func TestRedteam11FederatedPeerCreatesConversationWithOurStaff(t *testing.T) {
	w := newFedWorld(t)
	// synced waits for a complete sync of alice with bea begun now: bea's
	// welcomes into alice's inbox have been offered and judged.
	synced := func(what string) {
		t.Helper()
		now := w.alice.M.Changes()
		testnet.Eventually(t, 20*time.Second, what, func() bool {
			w.alice.M.SyncWith(w.bea.ID)
			done, ok := w.alice.M.Synced(w.bea.ID)
			return ok && done >= now
		})
	}
	id, err := w.bea.C.Create("bea's own room", []peer.ID{w.alice.ID})
	if err != nil {
		t.Fatalf("bea cannot create a conversation naming alice: %v", err)
	}
	testnet.Send(t, w.bea, id, "from B's admin")
	synced("alice synced with bea after bea's welcome")
	if testnet.Joined(w.alice, id, 2) {
		t.Fatalf("alice (trust A) joined a conversation created by bea, a device of trust B, whose record does not let B invite: texts %q", testnet.Texts(w.alice, id))
	}
	// Control: once our root's newer record lets trust B invite ours, a
	// conversation bea creates is joined.
	testnet.Federate(t, w.a.FederationRecord(t, w.b, identity.Policy{Invites: true}, 2, false), w.alice)
	testnet.Federated(t, w.alice, w.bea)
	again, err := w.bea.C.Create("bea's invited room", []peer.ID{w.alice.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, "alice joins bea's conversation under a record that lets B invite", func() bool {
		w.alice.M.SyncWith(w.bea.ID)
		return testnet.Joined(w.alice, again, 2)
	})
}

// TestRedteam11FederatedWelcomeSteersAliceToForeignTag: bea (trust B)
// knows the tag of a conversation T she is not in (anna's: e.g. she was
// removed from it, or was told its tag); alice is not in T either. Bea
// signs a welcome whose envelope tag is T, with a junk share "sealed" to
// alice, into alice's inbox: the mesh takes it (federatedSender: "a
// welcome into our own inbox"), conversations joins T with joinedBy=bea,
// and since T never opens, Shares(bea, T) is true (conversations/
// federated.go: "its sender is the one to sync it from"). Alice then
// fetches T's ciphertext from anna and offers and serves it to bea: a
// federated peer is handed ciphertext (and sender IDs, timing) of a
// conversation it is no member of.
func TestRedteam11FederatedWelcomeSteersAliceToForeignTag(t *testing.T) {
	w := newFedWorld(t)
	tID, err := w.anna.C.Create("anna's ward", nil)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Send(t, w.anna, tID, "A only")
	tTag := chat.TagOf(tID, w.anna.ID)

	members := [][]byte{[]byte(w.alice.ID), []byte(w.bea.ID)}
	slices.SortFunc(members, bytes.Compare)
	body, err := detcbor.Marshal(e2e.Welcome{
		Members:       members,
		Commit:        bytes.Repeat([]byte{1}, 32),
		ControlCommit: bytes.Repeat([]byte{2}, 32),
		Seals:         []e2e.Seal{{Recipient: []byte(w.alice.ID), Enc: []byte("junk")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := e2e.New(tTag, w.bea.ID, nil)
	e.Kind = e2e.KindWelcome
	e.Body = body
	e.Wall = time.Now().UnixMilli()
	if err := e.Sign(w.bea.Ident.Key.Identity); err != nil {
		t.Fatal(err)
	}
	raw, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.alice.M.CheckEnvelope(raw, true); err != nil {
		t.Skipf("alice's mesh refuses bea's welcome into T: %v", err)
	}
	d, err := e2e.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	// What the mesh's deliver does with it once fetched from bea's side of
	// alice's inbox.
	if !w.alice.C.Deliver(tTag, []mesh.Checked{{Env: d, Raw: raw}}, w.bea.ID) {
		if w.alice.C.Shares(w.bea.ID, tTag) {
			t.Fatal("alice refused the welcome but shares T with bea")
		}
		return // alice does not join T on bea's welcome: the attack is refused
	}
	// Alice, now "holding" T, fetches anna's ciphertext of it.
	testnet.Eventually(t, 20*time.Second, "alice fetches anna's envelopes of T", func() bool { return len(w.alice.M.IDsOf(tTag)) >= 3 })
	r := rawOpen(t, w.bea, w.alice)
	if err := r.send(wireFrame{Kind: 1, Tags: sorted(w.sharedTag, tTag), FPs: randomTags(2)}); err != nil {
		t.Fatal(err)
	}
	tags, err := r.readOffer()
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(tags, func(a []byte) bool { return bytes.Equal(a, tTag) }) {
		t.Fatalf("alice offers bea the tag of anna's conversation T, which neither alice nor bea is a member of (alice holds %d of its envelopes)", len(w.alice.M.IDsOf(tTag)))
	}
}

// TestRedteam11RevokedFederatedMemberRemoved (holds): trust B's CRL revokes bea.
// Our own staff revoked by a CRL are removed by an admin's device at once
// (conversations.Revoke: a new epoch sealed to the members left), so a
// revoked device's epoch key opens nothing written after. The same must
// hold for a federated member its trust revokes.
func TestRedteam11RevokedFederatedMemberRemoved(t *testing.T) {
	w := newFedWorld(t)
	if _, err := w.alice.N.SubmitCRL(context.Background(), w.b.CRL(t, 1, w.bea.Ident)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := w.alice.C.State(w.shared); err == nil && !slices.Contains(st.Members, w.bea.ID) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	st, _ := w.alice.C.State(w.shared)
	t.Fatalf("bea, revoked by her trust's CRL, is still a member of the shared conversation (members %v): the epoch she holds stays current", st.Members)
}

// TestRedteam11WithdrawnTrustMemberStaysInEpoch: A withdraws its record
// for B. Bea is dropped from the connections, but she stays a member of
// the shared conversation and the epoch she holds stays current: what
// alice writes after the withdrawal is sealed under a key a device of B
// holds, so any path the ciphertext still takes to B (a colleague that has
// not applied the withdrawal yet, so still syncs with her; a re-federation
// later) opens it. A revoked colleague is removed with a new epoch; a
// withdrawn trust's members should be too.
func TestRedteam11WithdrawnTrustMemberStaysInEpoch(t *testing.T) {
	w := newFedWorld(t)
	testnet.Federate(t, w.a.FederationRecord(t, w.b, identity.Policy{}, 2, true), w.alice)
	testnet.Eventually(t, 20*time.Second, "alice drops bea", func() bool { return !w.alice.N.IsFederated(w.bea.ID) })
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := w.alice.C.State(w.shared); err == nil && !slices.Contains(st.Members, w.bea.ID) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	st, _ := w.alice.C.State(w.shared)
	t.Fatalf("after A withdrew its record for B, bea is still a member of the shared conversation (members %v): no new epoch excludes her", st.Members)
}

// TestRedteam11PromoteFederatedAfterRestart: "a device of another trust
// can never be an admin" rests on conversations.Promote asking
// Node.Foreign, which is the in-memory fed book: after alice's device
// restarts (no federated peer met yet, no colleague has re-sent its
// book), Foreign(bea) is false and alice's Promote of bea — a member of
// the shared conversation, named by peer ID as POST .../members
// {"promote":[...]} takes it — goes through; every replica's DAG accepts
// it (the chat core knows nothing of other trusts), and bea is an admin
// who can add and remove our staff.
func TestRedteam11PromoteFederatedAfterRestart(t *testing.T) {
	w := newFedWorld(t)
	w.alice.Stop()
	alice := start(t, w.a, w.alice.Ident, false)
	testnet.Eventually(t, 20*time.Second, "alice reopens the shared conversation", func() bool { return testnet.Joined(alice, w.shared, 2) })
	err := alice.C.Promote(w.shared, w.bea.ID)
	if err == nil {
		st, _ := alice.C.State(w.shared)
		t.Fatalf("alice, restarted, made bea (trust B) an admin: admins %v", st.Admins)
	}
	if !errors.Is(err, conversations.ErrForeignAdmin) {
		t.Logf("refused otherwise: %v", err)
	}
}
