package mesh_test

// Federated colleagues invited into a conversation (issue 18, scope
// "invited"): a device of trust B, admitted by A under A's record (and A's
// devices by B under B's), is invited by a member of A; both sides read,
// write and see honest delivery states; nothing else of A's moves to it.

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/mesh"
)

// fedWorld: alice and anna of trust A (admitted to each other), bea of
// trust B; both roots federate with each other (scope "invited"), and bea
// is connected to alice only.
type fedWorld struct {
	a, b              *testnet.CA
	alice, anna, bea  *testnet.Peer
	recA              []byte // A's record naming B
	shared, secret    chat.ConversationID
	sharedTag, secTag []byte
}

func newFedWorld(t *testing.T) *fedWorld {
	t.Helper()
	w := &fedWorld{a: testnet.NewCA(t), b: testnet.NewCA(t)}
	w.alice = start(t, w.a, w.a.Enrol(t, "alice"), false)
	w.anna = start(t, w.a, w.a.Enrol(t, "anna"), false, w.alice)
	w.bea = start(t, w.b, w.b.Enrol(t, "bea"), false)
	testnet.Eventually(t, 20*time.Second, "alice and anna admitted", func() bool {
		return w.alice.N.IsAdmitted(w.anna.ID) && w.anna.N.IsAdmitted(w.alice.ID)
	})
	w.recA = w.a.FederationRecord(t, w.b, identity.Policy{}, 1, false)
	testnet.Federate(t, w.recA, w.alice, w.anna)
	// Trust B lets our staff invite its devices; ours does not let B's
	// invite ours (red team 11: a B device creating its own conversation
	// with our staff, as its admin).
	testnet.Federate(t, w.b.FederationRecord(t, w.a, identity.Policy{Invites: true}, 1, false), w.bea)
	testnet.Connect(t, w.bea, w.alice)
	testnet.Federated(t, w.alice, w.bea)
	testnet.Knows(t, w.alice, w.anna)
	own, err := w.bea.N.Recipient(w.bea.ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "alice holds bea's signed prekey", func() bool {
		r, err := w.alice.N.Recipient(w.bea.ID, time.Now())
		return err == nil && r.PrekeyID == own.PrekeyID && bytes.Equal(r.KEM, own.KEM)
	})
	if w.secret, err = w.alice.C.Create("secret ward", []peer.ID{w.anna.ID}); err != nil {
		t.Fatal(err)
	}
	if w.shared, err = w.alice.C.Create("shared patient", []peer.ID{w.bea.ID}); err != nil {
		t.Fatal(err)
	}
	w.sharedTag, w.secTag = chat.TagOf(w.shared, w.alice.ID), chat.TagOf(w.secret, w.alice.ID)
	testnet.Eventually(t, 20*time.Second, "bea joined the shared conversation", func() bool { return testnet.Joined(w.bea, w.shared, 2) })
	testnet.Eventually(t, 20*time.Second, "anna joined the secret one", func() bool { return testnet.Joined(w.anna, w.secret, 2) })
	return w
}

func stateOf(p *testnet.Peer, id chat.ConversationID, op string) string {
	msgs, err := p.C.Messages(id)
	if err != nil {
		return ""
	}
	for _, m := range msgs {
		if m.ID.String() == op {
			return m.State
		}
	}
	return ""
}

func TestFederatedInvitedConversation(t *testing.T) {
	w := newFedWorld(t)
	fromA := testnet.Send(t, w.alice, w.shared, "hello from A")
	testnet.Eventually(t, 20*time.Second, "bea reads alice", func() bool { return slices.Contains(testnet.Texts(w.bea, w.shared), "hello from A") })
	fromB := testnet.Send(t, w.bea, w.shared, "hello from B")
	testnet.Eventually(t, 20*time.Second, "alice reads bea", func() bool { return slices.Contains(testnet.Texts(w.alice, w.shared), "hello from B") })

	testnet.Eventually(t, 20*time.Second, "alice sees her message delivered", func() bool {
		return stateOf(w.alice, w.shared, fromA.String()) == chat.StateDelivered
	})
	testnet.Eventually(t, 20*time.Second, "bea sees hers delivered", func() bool {
		return stateOf(w.bea, w.shared, fromB.String()) == chat.StateDelivered
	})
	if err := w.bea.C.Receipt(w.shared, chat.Read, fromA); err != nil {
		t.Fatal(err)
	}
	if err := w.alice.C.Receipt(w.shared, chat.Read, fromB); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, "alice sees hers read", func() bool {
		return stateOf(w.alice, w.shared, fromA.String()) == chat.StateRead
	})
	testnet.Eventually(t, 20*time.Second, "bea sees hers read", func() bool {
		return stateOf(w.bea, w.shared, fromB.String()) == chat.StateRead
	})

	// Nothing else of A's crossed: bea holds one conversation, never the
	// secret one; the secret one's tag is offered to her by no one.
	if n := len(w.bea.C.Conversations()); n != 1 {
		t.Fatalf("bea holds %d conversations", n)
	}
	if _, err := w.bea.C.State(w.secret); err == nil {
		t.Fatal("bea holds the secret conversation")
	}
	for _, tag := range w.bea.M.Tags() {
		if bytes.Equal(tag, w.secTag) {
			t.Fatal("bea holds the secret conversation's tag")
		}
	}
	// Bea was introduced to the members she shares a conversation with,
	// and to no one else: anna, in none with her, stays unknown to her.
	if known, _ := w.bea.N.KnownFederated(w.anna.ID); known {
		t.Fatal("bea was told of anna, who shares no conversation with her")
	}
	if _, err := w.bea.N.Recipient(w.anna.ID, time.Now()); err == nil {
		t.Fatal("bea can seal to anna")
	}
	// Nor does bea's inbox reach alice: alice holds nothing of it.
	if ids := w.alice.M.IDsOf(mesh.InboxTag(w.bea.ID)); len(ids) != 1 {
		t.Fatalf("alice holds %d envelopes for bea's inbox, want her own welcome", len(ids))
	}
}

// TestFederatedPeerSyncsOnlyItsConversations: bea speaks sync by hand.
// Alice offers her only the shared conversation and the two inboxes;
// bea's reconciling the secret tag, or opening a hand phase, cuts the
// session off.
func TestFederatedPeerSyncsOnlyItsConversations(t *testing.T) {
	w := newFedWorld(t)
	allowed := [][]byte{w.sharedTag, mesh.InboxTag(w.bea.ID), mesh.InboxTag(w.alice.ID)}

	r := rawOpen(t, w.bea, w.alice)
	if err := r.send(wireFrame{Kind: 1, Tags: sorted(w.sharedTag, w.secTag), FPs: randomTags(2), Carry: true}); err != nil {
		t.Fatal(err)
	}
	f, err := r.recv()
	if err != nil {
		t.Fatal(err)
	}
	if f.Carry {
		t.Fatal("alice says she carries to a federated peer")
	}
	for _, tag := range f.Tags {
		if !slices.ContainsFunc(allowed, func(a []byte) bool { return bytes.Equal(a, tag) }) {
			t.Fatalf("alice offers bea a tag she does not share: %x", tag)
		}
	}
	if !slices.ContainsFunc(f.Tags, func(a []byte) bool { return bytes.Equal(a, w.sharedTag) }) {
		t.Fatal("alice does not offer bea the shared conversation")
	}
	if err := r.send(wireFrame{Kind: 2, Tag: w.secTag, Msg: fpMsg(t)}); err != nil {
		t.Fatal(err)
	}
	if f, err := r.recv(); err == nil {
		t.Fatalf("alice answered a recon of the secret tag: kind %d", f.Kind)
	}

	// A hand phase from a federated peer is refused.
	r = rawOpen(t, w.bea, w.alice)
	if err := r.send(wireFrame{Kind: 1, Tags: sorted(w.sharedTag), FPs: randomTags(1), Carry: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.readOffer(); err != nil {
		t.Fatal(err)
	}
	hand := wireFrame{Kind: 6}
	if err := r.send(hand); err != nil {
		t.Fatal(err)
	}
	if f, err := r.recv(); err == nil {
		t.Fatalf("alice answered a hand phase of a federated peer: kind %d", f.Kind)
	}
}

// TestFederatedEnvelopesOnlyOfItsConversations: an envelope bea signs into
// a conversation she is not in is refused by the mesh, pushed or fetched;
// one into the shared conversation passes. Anna, told of bea by alice,
// takes no push of hers into the secret conversation either.
func TestFederatedEnvelopesOnlyOfItsConversations(t *testing.T) {
	w := newFedWorld(t)
	forge := func(tag []byte) []byte {
		e := e2e.New(tag, w.bea.ID, nil)
		e.Kind = e2e.KindContent
		e.Body = []byte("sealed")
		e.Epoch = bytes.Repeat([]byte{7}, 32)
		e.Wall = time.Now().UnixMilli()
		if err := e.Sign(w.bea.Ident.Key.Identity); err != nil {
			t.Fatal(err)
		}
		raw, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	for _, p := range []*testnet.Peer{w.alice, w.anna} {
		if err := p.M.CheckEnvelope(forge(w.secTag), false); err == nil {
			t.Fatalf("%s takes a push of bea's envelope into the secret conversation", p.Ident.Name)
		}
	}
	for _, viaSync := range []bool{false, true} {
		if err := w.alice.M.CheckEnvelope(forge(w.sharedTag), viaSync); err != nil {
			t.Fatalf("alice refuses bea's envelope into the shared conversation (via sync %v): %v", viaSync, err)
		}
	}
	// Fetched by sync (a colleague who met bea serving it), it reaches the
	// conversation, whose DAG refuses an author who is no member.
	before := len(testnet.Texts(w.alice, w.secret))
	raw := forge(w.secTag)
	e, err := e2e.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	w.alice.C.Deliver(w.secTag, []mesh.Checked{{Env: e, Raw: raw}}, w.bea.ID)
	if after := len(testnet.Texts(w.alice, w.secret)); after != before {
		t.Fatalf("the secret conversation shows %d messages, had %d", after, before)
	}
}

// TestFederatedMemberCannotInvite: bea may add no one, and alice cannot
// make her an admin.
func TestFederatedMemberCannotInvite(t *testing.T) {
	w := newFedWorld(t)
	if err := w.bea.C.Add(w.shared, w.anna.ID); err == nil {
		t.Fatal("bea added anna")
	}
	if err := w.alice.C.Promote(w.shared, w.bea.ID); !errors.Is(err, conversations.ErrForeignAdmin) {
		t.Fatalf("alice promotes bea: %v", err)
	}
	testnet.Eventually(t, 10*time.Second, "membership unchanged", func() bool { return testnet.Joined(w.alice, w.shared, 2) })
}

// TestFederatedRemovedGetsNothingNew: once removed, bea is offered the
// conversation no more, and what alice writes after does not reach her;
// once A withdraws its record, she is dropped.
func TestFederatedRemovedGetsNothingNew(t *testing.T) {
	w := newFedWorld(t)
	testnet.Send(t, w.alice, w.shared, "before")
	testnet.Eventually(t, 20*time.Second, "bea reads before", func() bool { return slices.Contains(testnet.Texts(w.bea, w.shared), "before") })
	if err := w.alice.C.Remove(w.shared, w.bea.ID); err != nil {
		t.Fatal(err)
	}
	testnet.Send(t, w.alice, w.shared, "after")
	r := rawOpen(t, w.bea, w.alice)
	if err := r.send(wireFrame{Kind: 1, Tags: sorted(w.sharedTag), FPs: randomTags(1)}); err != nil {
		t.Fatal(err)
	}
	tags, err := r.readOffer()
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(tags, func(a []byte) bool { return bytes.Equal(a, w.sharedTag) }) {
		t.Fatal("alice still offers the conversation to bea after removing her")
	}
	testnet.Eventually(t, 20*time.Second, "a sync round of bea with alice completes", func() bool { return syncs(w.bea, w.alice) })
	if slices.Contains(testnet.Texts(w.bea, w.shared), "after") {
		t.Fatal("bea reads what alice wrote after removing her")
	}

	testnet.Federate(t, w.a.FederationRecord(t, w.b, identity.Policy{}, 2, true), w.alice)
	testnet.Eventually(t, 20*time.Second, "alice drops bea", func() bool { return !w.alice.N.IsFederated(w.bea.ID) })
	if known, _ := w.alice.N.KnownFederated(w.bea.ID); known {
		t.Fatal("bea still known to alice after the withdrawal")
	}
	if _, err := w.alice.N.Recipient(w.bea.ID, time.Now()); err == nil {
		t.Fatal("alice can still seal to bea after the withdrawal")
	}
}

// TestFederatedPeerGetsNoGossip: bea subscribes to the secret
// conversation's topic and the trust topic; nothing reaches her while anna
// gets alice's message.
func TestFederatedPeerGetsNoGossip(t *testing.T) {
	w := newFedWorld(t)
	ps := w.bea.N.PubSub()
	topic, err := ps.Join("/medmesh/conv/" + hex.EncodeToString(w.secTag))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Cancel()
	testnet.Send(t, w.alice, w.secret, "for A only")
	testnet.Eventually(t, 20*time.Second, "anna reads it", func() bool { return slices.Contains(testnet.Texts(w.anna, w.secret), "for A only") })
	testnet.Send(t, w.alice, w.shared, "barrier")
	testnet.Eventually(t, 20*time.Second, "bea reads the barrier", func() bool { return slices.Contains(testnet.Texts(w.bea, w.shared), "barrier") })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if m, err := sub.Next(ctx); err == nil {
		t.Fatalf("bea got a message on the secret topic from %s", m.ReceivedFrom)
	}
}

func sorted(tags ...[]byte) [][]byte {
	out := slices.Clone(tags)
	slices.SortFunc(out, bytes.Compare)
	return out
}

// TestFederatedRevokedByItsTrust: trust B's CRL revoking bea, handed to
// alice, makes her a revoked sender (fresh pushes refused), drops her, and
// leaves nothing to seal to.
func TestFederatedRevokedByItsTrust(t *testing.T) {
	w := newFedWorld(t)
	crl := w.b.CRL(t, 1, w.bea.Ident)
	if _, err := w.alice.N.SubmitCRL(context.Background(), crl); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, "alice drops bea", func() bool { return !w.alice.N.IsFederated(w.bea.ID) })
	if known, revoked := w.alice.N.KnownFederated(w.bea.ID); !known || !revoked {
		t.Fatalf("bea known %v revoked %v", known, revoked)
	}
	e := e2e.New(w.sharedTag, w.bea.ID, nil)
	e.Kind, e.Body, e.Epoch, e.Wall = e2e.KindContent, []byte("sealed"), bytes.Repeat([]byte{7}, 32), time.Now().UnixMilli()
	if err := e.Sign(w.bea.Ident.Key.Identity); err != nil {
		t.Fatal(err)
	}
	raw, _ := e.Encode()
	if err := w.alice.M.CheckEnvelope(raw, false); err == nil {
		t.Fatal("alice takes a fresh push of a revoked federated sender")
	}
	if _, err := w.alice.N.Recipient(w.bea.ID, time.Now()); err == nil {
		t.Fatal("alice can seal to a revoked federated device")
	}
}

// TestFederatedThreeWay: alice invites bea into a conversation with anna,
// who never meets bea: anna reads bea (alice told her who bea is) and
// alice's reply, which depends on bea's message; bea reads anna.
func TestFederatedThreeWay(t *testing.T) {
	w := newFedWorld(t)
	testnet.Eventually(t, 20*time.Second, "anna learns of bea from alice", func() bool {
		known, _ := w.anna.N.KnownFederated(w.bea.ID)
		return known
	})
	id, err := w.alice.C.Create("three", []peer.ID{w.anna.ID, w.bea.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, "all three joined", func() bool {
		return testnet.Joined(w.bea, id, 3) && testnet.Joined(w.anna, id, 3)
	})
	testnet.Send(t, w.bea, id, "from bea")
	testnet.Eventually(t, 20*time.Second, "alice reads bea", func() bool { return slices.Contains(testnet.Texts(w.alice, id), "from bea") })
	testnet.Send(t, w.alice, id, "reply from alice")
	testnet.Send(t, w.anna, id, "from anna")
	testnet.Eventually(t, 30*time.Second, "anna reads bea and alice", func() bool {
		texts := testnet.Texts(w.anna, id)
		return slices.Contains(texts, "from bea") && slices.Contains(texts, "reply from alice")
	})
	testnet.Eventually(t, 30*time.Second, "bea reads anna", func() bool { return slices.Contains(testnet.Texts(w.bea, id), "from anna") })
	if known, _ := w.bea.N.KnownFederated(w.anna.ID); !known {
		t.Fatal("bea was not told of anna, a fellow member")
	}
	if w.anna.N.IsFederated(w.bea.ID) || w.bea.N.IsFederated(w.anna.ID) {
		t.Fatal("anna and bea met")
	}
}

// TestFederatedNoAnchorSync: an anchor of trust A that admits bea as
// federated never syncs with her: her session is reset unread, and it
// offers her nothing.
func TestFederatedNoAnchorSync(t *testing.T) {
	w := newFedWorld(t)
	anchor := start(t, w.a, w.a.Enrol(t, "anchor", mesh.RoleAnchor), true, w.alice)
	testnet.Federate(t, w.recA, anchor)
	testnet.Connect(t, w.bea, anchor)
	testnet.Eventually(t, 20*time.Second, "the anchor admits bea as federated", func() bool { return anchor.N.IsFederated(w.bea.ID) })
	r := rawOpen(t, w.bea, anchor)
	if err := r.send(wireFrame{Kind: 1, Tags: sorted(w.sharedTag), FPs: randomTags(1)}); err != nil {
		t.Fatal(err)
	}
	if f, err := r.recv(); err == nil {
		t.Fatalf("the anchor answered bea's session: kind %d", f.Kind)
	}
}
