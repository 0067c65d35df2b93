package device_test

// Red-team round 3 (tests named after the attack they stop): the revocation wiring (CRL -> every replica's
// predicate) and join-on-welcome, on real devices on loopback.

import (
	"context"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/mesh"
)

// rtEnrolDays enrols a device whose certificate is valid for days.
func rtEnrolDays(t *testing.T, c *testnet.CA, name string, days int) *testnet.Identity {
	t.Helper()
	k, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := identity.CreateCSR(k, identity.Details{Name: name, StaffID: name})
	r, _ := identity.ParseCSR(csr)
	cert, err := c.CA.Sign(r, identity.SignOptions{Days: days}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := c.CA.Bundle(cert)
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := identity.ParseCertificates(bundle)
	return &testnet.Identity{Name: name, Key: k, Chain: chain, Store: dssync.MutexWrap(ds.NewMapDatastore())}
}

// TestRedteam3RevokedOpsStandAgainOnceCertExpires: the predicate device
// wires into every replica is KnownStaff's revoked flag, which is computed
// by trust.Admit at now. Admit checks validity dates before the CRL, so
// once the revoked certificate has expired KnownStaff says (known=false,
// revoked=false) and every replica judges the revoked device's ops as
// those of an unrevoked sender at its next rebuild: the stolen phone's
// unendorsed edit, withdrawn when the CRL arrived, is shown again. Device
// certificates last 30 days by default, so this happens within a month of
// any theft. (The directory's isRevoked handles expiry; KnownStaff does
// not.)
func TestRevokedOpsStayHiddenAfterCertExpires(t *testing.T) {
	c := testnet.NewCA(t)
	var clk clock
	mid := rtEnrolDays(t, c, "mallory", 1)
	a := testnet.Start(t, c, c.Enrol(t, "alice"), device.WithClock(clk.now))
	m, id := revokedEditWithdrawn(t, c, a, mid)
	m.Stop()

	// Two days on, mallory's (revoked) certificate has expired. Any new op
	// makes alice's replica judge again.
	clk.advance(48 * time.Hour)
	if known, revoked := a.N.KnownStaff(m.ID); !revoked {
		t.Logf("KnownStaff(mallory) after expiry: known=%v revoked=%v", known, revoked)
	}
	testnet.Send(t, a, id, "handover done")
	if standing(a, id, "bed 4 can go home") {
		t.Fatal("once the revoked certificate expired, the stolen device's unendorsed edit stands again")
	}
}

// TestRedteam3BogusWelcomeOverGossipBricksVictim: an admitted colleague
// publishes, on the victim's inbox topic, one welcome for a made-up tag
// naming the victim but sealing it nothing. The victim's device joins an
// empty replica and persists it; on its next start device.Open fails.
func TestWelcomeOverGossipDoesNotBrickVictim(t *testing.T) {
	c := testnet.NewCA(t)
	vid := c.Enrol(t, "victim")
	v := testnet.Start(t, c, vid)
	m := testnet.Start(t, c, c.Enrol(t, "mallory"), testnet.Boot(v))
	testnet.Eventually(t, 15*time.Second, "admitted", func() bool { return v.N.IsAdmitted(m.ID) && m.N.IsAdmitted(v.ID) })

	tag := make([]byte, 16)
	rand.Read(tag)
	conv := make([]byte, 16)
	rand.Read(conv)
	e := e2e.New(tag, m.ID, nil)
	if err := e2e.SealWelcome(e, e2e.NewSecret(), e2e.EpochKeys{Conv: conv, Creator: []byte(m.ID)}, []peer.ID{m.ID, v.ID},
		[]e2e.Recipient{{ID: v.ID, KEM: vid.Key.KEM.PublicKey().Bytes()}}); err != nil {
		t.Fatal(err)
	}
	e.Wall = time.Now().UnixNano()
	if err := e.Sign(m.Ident.Key.Identity); err != nil {
		t.Fatal(err)
	}
	raw, _ := e.Encode()
	topic, err := m.N.PubSub().Join("/medmesh/inbox/" + v.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	defer topic.Close()
	held := func() bool {
		for _, x := range v.C.Tags() {
			if string(x) == string(tag) {
				return true
			}
		}
		return false
	}
	// Publish once the victim's inbox subscription has reached mallory's
	// gossipsub (an identical message published again would be dropped as
	// already seen).
	testnet.Eventually(t, 15*time.Second, "mallory sees the victim on its inbox topic", func() bool {
		return slices.Contains(topic.ListPeers(), v.ID)
	})
	if err := topic.Publish(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "the victim joined the made-up conversation", held)
	if n := len(v.C.Conversations()); n != 0 {
		t.Logf("visible: %d", n)
	}
	v.Stop()
	d, err := device.Open(context.Background(), "", nil, device.WithIdentity(vid.Key, vid.Chain, c.Trust(t)), device.WithStore(vid.Store),
		device.WithListen("/ip4/127.0.0.1/tcp/0"), device.WithLogger(testnet.Logger()))
	if err != nil {
		t.Fatalf("one welcome from a colleague bricks the victim's device: device.Open: %v", err)
	}
	d.Close()
}

// rtRevokedCreatorWard: mallory creates a ward conversation with alice and
// bob, promotes alice, alice endorses the promotion; then mallory's phone
// is stolen (it never hears of the CRL) and alice's device learns the CRL
// and removes the creator.
func rtRevokedCreatorWard(t *testing.T) (c *testnet.CA, a, b, cc *testnet.Peer, mid *testnet.Identity, id chat.ConversationID) {
	c = testnet.NewCA(t)
	mid = c.Enrol(t, "mallory")
	a = testnet.Start(t, c, c.Enrol(t, "alice"))
	b = testnet.Start(t, c, c.Enrol(t, "bob"), testnet.Boot(a))
	cc = testnet.Start(t, c, c.Enrol(t, "carol"), testnet.Boot(a))
	m := testnet.Start(t, c, mid, testnet.Boot(a))
	testnet.Knows(t, m, a, b)
	testnet.Knows(t, a, cc)
	id, err := m.C.Create("ward", []peer.ID{a.ID, b.ID})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.C.Promote(id, a.ID); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "alice is an admin", func() bool {
		st, err := a.C.State(id)
		return err == nil && len(st.Admins) == 2 && len(st.Members) == 3
	})
	testnet.Send(t, a, id, "thanks") // depends on the promotion: endorses it
	testnet.Eventually(t, 15*time.Second, "mallory and bob have it", func() bool { return standing(m, id, "thanks") && standing(b, id, "thanks") })
	m.Stop()
	for _, p := range []*testnet.Peer{a, b} {
		if _, err := p.N.SubmitCRL(context.Background(), c.CRL(t, 1, mid)); err != nil {
			t.Fatal(err)
		}
	}
	// Alice's revocation hook removes the revoked creator (an admin may
	// remove a revoked member whatever its seniority), which rekeys.
	testnet.Eventually(t, 15*time.Second, "the revoked creator removed on alice", func() bool {
		st, err := a.C.State(id)
		return err == nil && !slices.Contains(st.Members, mid.Key.PeerID())
	})
	return c, a, b, cc, mid, id
}

// TestRevokedCreatorStopsReading: what colleagues write after a revoked
// creator's removal goes in an epoch the stolen phone does not hold, even
// when any admitted colleague (or an anchor's client) hands it the
// ciphertext. (Red team 3 found the auto-removal could not remove a
// creator, an admin's senior, so the old key kept working.)
func TestRevokedCreatorStopsReading(t *testing.T) {
	c, a, _, _, mid, id := rtRevokedCreatorWard(t)
	testnet.Send(t, a, id, "bed 9: HIV positive, after the theft")
	tag := a.C.Tags()[0]
	var envs []mesh.Checked
	for _, raw := range a.C.Envelopes(tag, a.C.IDs(tag)) {
		e, err := e2e.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, mesh.Checked{Env: e, Raw: raw})
	}
	thief := testnet.Start(t, c, mid) // the stolen phone, offline, fed the ciphertext by a relay
	thief.C.Deliver(tag, envs, a.ID)
	if standing(thief, id, "bed 9: HIV positive, after the theft") {
		t.Fatal("the revoked (stolen) creator's device decrypts a message sent after its revocation: no new epoch excluded it")
	}
}

// TestAddAfterRevokedCreatorRemoved: the stolen creator's phone is
// removed by the junior admin's device as the CRL arrives (an admin may
// remove a revoked member whatever its seniority); an add then seals the
// next epoch to colleagues only, and everyone can still write. (Before,
// the creator could not be removed, the add's rekey had to seal to it and
// failed after the add op was published: nobody could write again.)
func TestAddAfterRevokedCreatorRemoved(t *testing.T) {
	_, a, b, cc, _, id := rtRevokedCreatorWard(t)
	if err := a.C.Add(id, cc.ID); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "bob and carol have the add", func() bool {
		return testnet.Joined(b, id, 3) && testnet.Joined(cc, id, 3)
	})
	testnet.Send(t, a, id, "from alice")
	testnet.Send(t, b, id, "from bob")
	testnet.Eventually(t, 15*time.Second, "carol reads both", func() bool {
		return standing(cc, id, "from alice") && standing(cc, id, "from bob")
	})
}

// TestRedteam3AutoRemovalWedgesConversation: the same wedge with no
// human action. One CRL revokes the creator's phone and another member's
// (two phones lost in one incident). Revoke on the junior admin's device
// removes what it can: the removal of eve is valid and applied, its rekey
// must seal to the revoked creator and fails — the removal is published
// anyway — and the ward conversation can never be written in again.
func TestAutoRemovalDoesNotWedgeConversation(t *testing.T) {
	c := testnet.NewCA(t)
	mid, eid := c.Enrol(t, "mallory"), c.Enrol(t, "eve")
	a := testnet.Start(t, c, c.Enrol(t, "alice"))
	b := testnet.Start(t, c, c.Enrol(t, "bob"), testnet.Boot(a))
	e := testnet.Start(t, c, eid, testnet.Boot(a))
	m := testnet.Start(t, c, mid, testnet.Boot(a))
	testnet.Knows(t, m, a, b, e)
	id, err := m.C.Create("ward", []peer.ID{a.ID, b.ID, e.ID})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.C.Promote(id, a.ID); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "alice is an admin", func() bool {
		st, err := a.C.State(id)
		return err == nil && len(st.Admins) == 2 && len(st.Members) == 4
	})
	testnet.Send(t, a, id, "thanks")
	testnet.Eventually(t, 15*time.Second, "everyone has it", func() bool { return standing(b, id, "thanks") && standing(m, id, "thanks") })
	m.Stop()
	e.Stop()
	for _, p := range []*testnet.Peer{a, b} {
		if _, err := p.N.SubmitCRL(context.Background(), c.CRL(t, 1, mid, eid)); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 10*time.Second, "alice's device removed eve", func() bool {
		st, err := a.C.State(id)
		return err == nil && !slices.Contains(st.Members, e.ID)
	})
	time.Sleep(time.Second)
	_, errA := a.C.Send(id, "is anyone there?", chat.SendOptions{})
	_, errB := b.C.Send(id, "is anyone there?", chat.SendOptions{})
	if errA != nil && errB != nil {
		t.Fatalf("a CRL alone wedged the conversation through Revoke's auto-removal: alice: %v; bob: %v", errA, errB)
	}
}

// TestRedteam3RelayedRevokedOpStandsAfterNextSend: TestRevokedSenderRelayedBySync
// one step further. Bob's device hides the stolen phone's message the
// anchor relayed; then Bob writes anything. His op depends on every head,
// the hidden message included, so it endorses it: the stolen phone's
// message is shown on Bob's device (and wherever his op goes).
func TestRelayedRevokedOpStaysHiddenAfterNextSend(t *testing.T) {
	c := testnet.NewCA(t)
	xid, aid, bid, mid := c.Enrol(t, "anchor"), c.Enrol(t, "alice"), c.Enrol(t, "bob"), c.Enrol(t, "mallory")
	x := testnet.Start(t, c, xid, device.WithAnchor(0, 0))
	a := testnet.Start(t, c, aid, testnet.Boot(x))
	b := testnet.Start(t, c, bid, testnet.Boot(x))
	m := testnet.Start(t, c, mid, testnet.Boot(x))
	testnet.Knows(t, a, b, m)
	id, err := a.C.Create("ward", []peer.ID{b.ID, m.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "everyone joined", func() bool {
		return testnet.Joined(b, id, 3) && testnet.Joined(m, id, 3)
	})
	a.Stop()
	b.Stop()
	op := testnet.Send(t, m, id, "sent from the stolen phone: discharge bed 4")
	tag := chat.TagOf(id, a.ID)
	testnet.Eventually(t, 15*time.Second, "the anchor carries it", func() bool { return slices.Contains(x.M.IDsOf(tag), op) })
	m.Stop()
	b = testnet.Start(t, c, bid)
	if _, err := b.N.SubmitCRL(context.Background(), c.CRL(t, 1, mid)); err != nil {
		t.Fatal(err)
	}
	if err := b.N.Host().Connect(context.Background(), peer.AddrInfo{ID: x.ID, Addrs: x.N.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "bob fetched the carried op", func() bool { return slices.Contains(b.M.IDsOf(tag), op) })
	if standing(b, id, "sent from the stolen phone: discharge bed 4") {
		t.Fatal("precondition: shown at once")
	}
	testnet.Send(t, b, id, "morning all")
	if standing(b, id, "sent from the stolen phone: discharge bed 4") {
		t.Fatal("the stolen phone's relayed message is shown as soon as bob writes anything")
	}
}
