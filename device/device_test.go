package device_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/node"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testnet.LeakOptions()...) }

// clock is a wall clock that a test can move forward.
type clock struct{ ahead atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.ahead.Load())) }
func (c *clock) advance(d time.Duration) { c.ahead.Add(int64(d)) }

// standing reports whether p shows a standing message with text in id.
func standing(p *testnet.Peer, id chat.ConversationID, text string) bool {
	msgs, err := p.C.Messages(id)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(msgs, func(m conversations.Message) bool { return m.Text == text && m.Withdrawn == "" })
}

// TestRevokedSenderRelayedBySync: a stolen phone's message, carried by an
// anchor that has not heard of the revocation, reaches a colleague who
// has; nobody unrevoked depends on it, so it is not shown. A message the
// same device sent before, which colleagues received (their receipts
// depend on it), still stands.
func TestRevokedSenderRelayedBySync(t *testing.T) {
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
	testnet.Send(t, m, id, "before the theft")
	testnet.Eventually(t, 15*time.Second, "b read it", func() bool { return standing(b, id, "before the theft") })

	// The phone is stolen; only the anchor is in reach of it.
	a.Stop()
	b.Stop()
	op := testnet.Send(t, m, id, "sent from the stolen phone")
	tag := chat.TagOf(id, a.ID)
	testnet.Eventually(t, 15*time.Second, "the anchor carries it", func() bool { return slices.Contains(x.M.IDsOf(tag), op) })
	m.Stop()

	// Bob learns of the revocation before he meets the anchor again.
	b = testnet.Start(t, c, bid)
	if _, err := b.N.SubmitCRL(context.Background(), c.CRL(t, 1, mid)); err != nil {
		t.Fatal(err)
	}
	if err := b.N.Host().Connect(context.Background(), peer.AddrInfo{ID: x.ID, Addrs: x.N.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "bob fetched the carried op", func() bool { return slices.Contains(b.M.IDsOf(tag), op) })
	if standing(b, id, "sent from the stolen phone") {
		t.Fatal("a revoked sender's unendorsed message is shown")
	}
	if !standing(b, id, "before the theft") {
		t.Fatal("a message colleagues received before the revocation was withdrawn")
	}
}

// TestRevocationReachesEveryReplica: a CRL that arrives after an op was
// taken in re-applies the rule on the replica (device wires each new CRL
// to every conversation). The revoked device's edit, which no colleague's
// op depends on (an edit asks for no receipt), stops standing at once: the
// message shows its text from before.
func TestRevocationReachesEveryReplica(t *testing.T) {
	c := testnet.NewCA(t)
	a := testnet.Start(t, c, c.Enrol(t, "alice"))
	revokedEditWithdrawn(t, c, a, c.Enrol(t, "mallory"))
}

// revokedEditWithdrawn: mid's device makes a conversation with a, sends a
// message and edits it; a learns the CRL revoking mid, and the edit (no
// colleague's op depends on it) stops standing on a. It returns mid's
// running device and the conversation.
func revokedEditWithdrawn(t *testing.T, c *testnet.CA, a *testnet.Peer, mid *testnet.Identity) (*testnet.Peer, chat.ConversationID) {
	t.Helper()
	m := testnet.Start(t, c, mid, testnet.Boot(a))
	testnet.Knows(t, m, a)
	id, err := m.C.Create("ward", []peer.ID{a.ID})
	if err != nil {
		t.Fatal(err)
	}
	msg := testnet.Send(t, m, id, "bed 4 is stable")
	testnet.Eventually(t, 15*time.Second, "alice has it", func() bool { return standing(a, id, "bed 4 is stable") })
	if err := m.C.Edit(id, msg, "bed 4 can go home"); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "alice has the edit", func() bool { return standing(a, id, "bed 4 can go home") })
	if _, err := a.N.SubmitCRL(context.Background(), c.CRL(t, 1, mid)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, "the revoked device's edit withdrawn on alice", func() bool {
		return standing(a, id, "bed 4 is stable") && !standing(a, id, "bed 4 can go home")
	})
	return m, id
}

// TestRetentionOnEveryReplica: once the retention period has passed, the
// expiry loop deletes the message on every member's device, and it stays
// deleted after a restart.
func TestRetentionOnEveryReplica(t *testing.T) {
	c := testnet.NewCA(t)
	var clk clock
	opts := []device.Option{device.WithClock(clk.now), device.WithExpiryEvery(20 * time.Millisecond)}
	aid, bid := c.Enrol(t, "alice"), c.Enrol(t, "bob")
	a := testnet.Start(t, c, aid, opts...)
	b := testnet.Start(t, c, bid, append(opts, testnet.Boot(a))...)
	testnet.Knows(t, a, b)
	id, err := a.C.Create("ward", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.C.SetRetention(id, time.Hour); err != nil {
		t.Fatal(err)
	}
	testnet.Send(t, a, id, "bed 4: CT at 3pm")
	testnet.Eventually(t, 15*time.Second, "bob has it", func() bool { return standing(b, id, "bed 4: CT at 3pm") })
	clk.advance(2 * time.Hour)
	for _, p := range []*testnet.Peer{a, b} {
		testnet.Eventually(t, 10*time.Second, "retention on "+p.Ident.Name, func() bool { return !slices.Contains(testnet.Texts(p, id), "bed 4: CT at 3pm") })
	}
	b.Stop()
	b = testnet.Start(t, c, bid, opts...)
	if slices.Contains(testnet.Texts(b, id), "bed 4: CT at 3pm") {
		t.Fatal("a message deleted by retention is back after a restart")
	}
}

// TestOldEpochsExpire: after a member is removed the conversation has a
// new epoch; the old epoch's chains are dropped after e2e.MessageKeyWindow
// by the expiry loop, and stay dropped after a restart.
func TestOldEpochsExpire(t *testing.T) {
	c := testnet.NewCA(t)
	var clk clock
	opts := []device.Option{device.WithClock(clk.now), device.WithExpiryEvery(20 * time.Millisecond)}
	aid, bid, cid := c.Enrol(t, "alice"), c.Enrol(t, "bob"), c.Enrol(t, "carol")
	a := testnet.Start(t, c, aid, opts...)
	b := testnet.Start(t, c, bid, append(opts, testnet.Boot(a))...)
	cc := testnet.Start(t, c, cid, append(opts, testnet.Boot(a))...)
	testnet.Knows(t, a, b, cc)
	id, err := a.C.Create("ward", []peer.ID{b.ID, cc.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "joined", func() bool { return testnet.Joined(b, id, 3) && testnet.Joined(cc, id, 3) })
	if err := a.C.Remove(id, cc.ID); err != nil {
		t.Fatal(err)
	}
	testnet.Send(t, a, id, "after the removal")
	testnet.Eventually(t, 15*time.Second, "bob in the new epoch", func() bool {
		ep, _, err := b.C.KeyState(id)
		return err == nil && ep == 2 && standing(b, id, "after the removal")
	})
	clk.advance(time.Hour) // the first pass notes when the old epoch went out of use
	testnet.Eventually(t, 10*time.Second, "a pass after the epoch changed", func() bool { return b.D.Expire() == nil })
	clk.advance(e2e.MessageKeyWindow + time.Hour)
	testnet.Eventually(t, 10*time.Second, "old epoch dropped on bob", func() bool {
		ep, _, _ := b.C.KeyState(id)
		return ep == 1
	})
	b.Stop()
	b = testnet.Start(t, c, bid, opts...)
	if ep, _, err := b.C.KeyState(id); err != nil || ep != 1 {
		t.Fatalf("after a restart bob holds %d epochs (%v)", ep, err)
	}
}

// TestRevokedColleagueNotSelectable: once a colleague is revoked, the
// directory no longer offers them and no conversation can be started
// with them or have them added.
func TestRevokedColleagueNotSelectable(t *testing.T) {
	c := testnet.NewCA(t)
	aid, bid, mid := c.Enrol(t, "alice"), c.Enrol(t, "bob"), c.Enrol(t, "mallory")
	a := testnet.Start(t, c, aid)
	b := testnet.Start(t, c, bid, testnet.Boot(a))
	m := testnet.Start(t, c, mid, testnet.Boot(a))
	testnet.Knows(t, a, b, m)
	id, err := a.C.Create("ward", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.N.SubmitCRL(context.Background(), c.CRL(t, 1, mid)); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.N.LookupStaff("mallory"); ok {
		t.Error("LookupStaff offers a revoked colleague by staff ID")
	}
	if _, ok := a.N.LookupStaff(m.ID.String()); ok {
		t.Error("LookupStaff offers a revoked colleague by peer ID")
	}
	for _, s := range a.N.Directory() {
		if s.PeerID == m.ID.String() {
			t.Error("the directory lists a revoked colleague")
		}
	}
	if _, err := a.C.Create("new", []peer.ID{m.ID}); !errors.Is(err, node.ErrRevoked) {
		t.Errorf("a conversation with a revoked colleague: %v", err)
	}
	if err := a.C.Add(id, m.ID); !errors.Is(err, node.ErrRevoked) {
		t.Errorf("adding a revoked colleague: %v", err)
	}
}

// TestAdminRemovesRevokedMember: a conversation that holds a colleague
// who is then revoked loses them at once on an admin's device, and the
// next message goes in an epoch the revoked device never receives.
func TestAdminRemovesRevokedMember(t *testing.T) {
	c := testnet.NewCA(t)
	aid, bid, mid := c.Enrol(t, "alice"), c.Enrol(t, "bob"), c.Enrol(t, "mallory")
	a := testnet.Start(t, c, aid)
	b := testnet.Start(t, c, bid, testnet.Boot(a))
	m := testnet.Start(t, c, mid, testnet.Boot(a))
	testnet.Knows(t, a, b, m)
	id, err := a.C.Create("ward", []peer.ID{b.ID, m.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "joined", func() bool { return testnet.Joined(b, id, 3) && testnet.Joined(m, id, 3) })
	if _, err := a.N.SubmitCRL(context.Background(), c.CRL(t, 1, mid)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, "alice's device removed mallory", func() bool {
		st, err := a.C.State(id)
		return err == nil && !slices.Contains(st.Members, m.ID) && len(st.Members) == 2
	})
	testnet.Send(t, a, id, "after the revocation")
	testnet.Eventually(t, 15*time.Second, "bob reads it", func() bool { return standing(b, id, "after the revocation") })
	if standing(m, id, "after the revocation") {
		t.Fatal("the revoked device reads a message sent after its revocation")
	}
}

// TestSiteCRLSurvivesRestart: devices enrolled by a site issuing CA; the
// site CA revokes one; a colleague's device that learnt the CRL restarts
// on its store and, with nobody sending the CRL again, still refuses the
// revoked device and still judges it revoked.
func TestSiteCRLSurvivesRestart(t *testing.T) {
	root := testnet.NewCA(t)
	north := root.Site(t, "North Site")
	aid, mid := north.Enrol(t, "alice"), north.Enrol(t, "mallory")
	a := testnet.Start(t, north, aid)
	m := testnet.Start(t, north, mid, testnet.Boot(a))
	testnet.Eventually(t, 15*time.Second, "admitted, details shown", func() bool {
		_, known := a.N.LookupStaff("mallory")
		return a.N.IsAdmitted(m.ID) && known
	})
	if _, err := a.N.SubmitCRL(context.Background(), north.CRL(t, 1, mid)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, "mallory thrown out", func() bool { return !a.N.IsAdmitted(m.ID) })
	m.Stop()
	a.Stop()
	a = testnet.Start(t, north, aid)
	if _, revoked := a.N.KnownStaff(m.ID); !revoked {
		t.Fatal("after a restart the site CA's CRL is forgotten: the revoked device is not judged revoked")
	}
	m = testnet.Start(t, north, mid)
	m.N.Host().Connect(context.Background(), peer.AddrInfo{ID: a.ID, Addrs: a.N.Host().Addrs()}) // refused at once, or after presenting
	if a.N.IsAdmitted(m.ID) {
		t.Fatal("the revoked device is admitted after the restart")
	}
	testnet.Eventually(t, 10*time.Second, "mallory refused again", func() bool {
		return !a.N.IsAdmitted(m.ID) && a.N.Host().Network().Connectedness(m.ID) != network.Connected
	})
}
