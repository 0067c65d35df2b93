package conversations

import (
	"slices"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/internal/check"
	"github.com/medmesh/medmesh/mesh"
)

// fakeClock is the layer's clock, moved by the test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// escNode is one device's Service, its events and its audit events.
type escNode struct {
	d      *rtDev
	s      *Service
	events <-chan Event
	mu     sync.Mutex
	audit  []audit.Event
}

func newEscNode(t *testing.T, d *rtDev, dir rtDir, clock *fakeClock) *escNode {
	t.Helper()
	n := &escNode{d: d}
	s, err := Open(Config{Device: d.dev, Directory: dir, Store: dssync.MutexWrap(ds.NewMapDatastore()), Now: clock.Now,
		ReceiptWindow: -1, Audit: func(evs []audit.Event) { n.mu.Lock(); n.audit = append(n.audit, evs...); n.mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	n.s = s
	ch, cancel := s.Events()
	t.Cleanup(cancel)
	n.events = ch
	return n
}

// syncTo hands every envelope from holds to the others, as anti-entropy
// would (twice: welcomes that open late let more ops open).
func syncTo(t *testing.T, from *escNode, to ...*escNode) {
	t.Helper()
	for range 2 {
		for _, tag := range from.s.Tags() {
			var envs []mesh.Checked
			for _, raw := range from.s.Envelopes(tag, from.s.IDs(tag)) {
				envs = append(envs, rtChecked(t, raw))
			}
			for _, n := range to {
				n.s.Deliver(tag, envs, from.d.id)
			}
		}
	}
}

// waitEvent waits for an event of kind about msg, draining others; it
// returns how many it saw.
func waitEvent(t *testing.T, n *escNode, kind string, msg crdt.OpID) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case ev := <-n.events:
			if ev.Kind == kind && len(ev.Ops) > 0 && ev.Ops[0] == msg {
				return
			}
		case <-deadline:
			t.Fatalf("no %s event for %s", kind, msg)
		}
	}
}

// countEvents drains what is queued now and counts events of kind.
func countEvents(n *escNode, kind string) int {
	c := 0
	for {
		select {
		case ev := <-n.events:
			if ev.Kind == kind {
				c++
			}
		default:
			return c
		}
	}
}

type staticEscalator struct {
	to    []peer.ID
	label string
}

func (e staticEscalator) Next(string, string, int) ([]peer.ID, string, bool) {
	return e.to, e.label, len(e.to) > 0
}

func escMessage(t *testing.T, n *escNode, id chat.ConversationID, msg crdt.OpID) Message {
	t.Helper()
	msgs, err := n.s.Messages(id)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.ID == msg {
			return m
		}
	}
	t.Fatalf("%s has no message %s", n.d.id, msg)
	return Message{}
}

func escWorld(t *testing.T) (*fakeClock, *escNode, *escNode, *escNode) {
	a, b, d := rtNewDev(t), rtNewDev(t), rtNewDev(t)
	dir := rtDir{a.id: a, b.id: b, d.id: d}
	clock := &fakeClock{now: time.Date(2026, 11, 30, 21, 0, 0, 0, time.UTC)}
	return clock, newEscNode(t, a, dir, clock), newEscNode(t, b, dir, clock), newEscNode(t, d, dir, clock)
}

// TestEscalationLoop: our urgent message passes its deadline with no
// acknowledgement: the app of the sender and of the recipient are
// re-alerted; EscalateAfter later the loop escalates to the colleague the
// Escalator names, who is alerted once, reads it and acknowledges it.
func TestEscalationLoop(t *testing.T) {
	clock, na, nb, nd := escWorld(t)
	na.s.StartEscalations(staticEscalator{to: []peer.ID{nd.d.id}, label: "Cardiology registrar on call"})
	nb.s.StartEscalations(nil)
	nd.s.StartEscalations(nil)
	id, err := na.s.Create("ward", []peer.ID{nb.d.id})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := na.s.Send(id, "bed 4 desaturating", chat.SendOptions{Urgent: true, AckWithin: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	syncTo(t, na, nb)
	if st := escMessage(t, na, id, msg).Escalation; st != EscalationWaiting {
		t.Fatalf("before the deadline: %q", st)
	}
	clock.Add(31 * time.Second)
	na.s.CheckEscalations()
	nb.s.CheckEscalations()
	waitEvent(t, na, EventReAlert, msg)
	waitEvent(t, nb, EventReAlert, msg)
	if st := escMessage(t, na, id, msg).Escalation; st != EscalationDue {
		t.Fatalf("after the deadline: %q", st)
	}
	clock.Add(EscalateAfter)
	na.s.CheckEscalations()
	testEventually(t, "the escalation is made", func() bool {
		return len(escMessage(t, na, id, msg).Messages().Escalations) == 1
	})
	m := escMessage(t, na, id, msg)
	if e := m.Escalations[0]; e.Step != 1 || !slices.Equal(e.To, []peer.ID{nd.d.id}) || e.Label != "Cardiology registrar on call" {
		t.Fatalf("escalation %+v", e)
	}
	if m.Escalation != EscalationEscalated {
		t.Fatalf("after escalating: %q", m.Escalation)
	}
	na.mu.Lock()
	audited := slices.ContainsFunc(na.audit, func(e audit.Event) bool { return e.Kind == audit.Escalated && slices.Contains(e.IDs.Ops, msg.String()) })
	na.mu.Unlock()
	if !audited {
		t.Fatal("no escalated audit event")
	}
	syncTo(t, na, nd, nb)
	nd.s.CheckEscalations()
	waitEvent(t, nd, EventEscalated, msg)
	syncTo(t, nb, nd)
	nd.s.CheckEscalations()
	if n := countEvents(nd, EventEscalated); n != 0 {
		t.Fatalf("target alerted %d more times", n)
	}
	got := escMessage(t, nd, id, msg)
	if got.Text != "bed 4 desaturating" || got.QuotedBy != na.d.id {
		t.Fatalf("the target reads %+v", got.Message)
	}
	if err := nd.s.Receipt(id, chat.Acknowledged, msg); err != nil {
		t.Fatal(err)
	}
	syncTo(t, nd, na)
	if st := escMessage(t, na, id, msg).Escalation; st != EscalationAcknowledged {
		t.Fatalf("after the target's acknowledgement: %q", st)
	}
	clock.Add(time.Hour)
	na.s.CheckEscalations()
	if len(escMessage(t, na, id, msg).Escalations) != 1 {
		t.Fatal("escalated past an acknowledgement")
	}
}

// Messages is a test helper's shorthand for the chat message.
func (m Message) Messages() chat.Message { return m.Message }

func testEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	check.Eventually(t, 15*time.Second, what, cond)
}

// TestEscalationChoose: with nobody next the sender is asked to choose,
// once, and escalates to the colleague it chose.
func TestEscalationChoose(t *testing.T) {
	clock, na, nb, nd := escWorld(t)
	na.s.StartEscalations(nil)
	id, err := na.s.Create("ward", []peer.ID{nb.d.id})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := na.s.Send(id, "call me", chat.SendOptions{Urgent: true, AckWithin: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := na.s.Escalate(id, msg, []peer.ID{nd.d.id}); err == nil {
		t.Fatal("escalated before the deadline")
	}
	clock.Add(time.Minute + EscalateAfter + time.Second)
	na.s.CheckEscalations()
	na.s.CheckEscalations()
	waitEvent(t, na, EventChoose, msg)
	if st := escMessage(t, na, id, msg).Escalation; st != EscalationChoose {
		t.Fatalf("state %q", st)
	}
	na.s.CheckEscalations()
	if n := countEvents(na, EventChoose); n != 0 {
		t.Fatalf("asked to choose %d more times", n)
	}
	if _, err := na.s.Escalate(id, msg, []peer.ID{nd.d.id}); err != nil {
		t.Fatal(err)
	}
	syncTo(t, na, nd)
	nd.s.CheckEscalations()
	waitEvent(t, nd, EventEscalated, msg)
}

// TestEscalationPartition: the sender's loop and another admin escalate
// the same step while partitioned from each other. Once they sync, both show
// the same standing escalation, and the colleague both named is alerted
// once however the ops reach it.
func TestEscalationPartition(t *testing.T) {
	clock, na, nb, nd := escWorld(t)
	id, err := na.s.Create("ward", []peer.ID{nb.d.id})
	if err != nil {
		t.Fatal(err)
	}
	// b, the sender, is an admin too: only admins escalate.
	if err := na.s.Promote(id, nb.d.id); err != nil {
		t.Fatal(err)
	}
	syncTo(t, na, nb)
	nb.s.StartEscalations(staticEscalator{to: []peer.ID{nd.d.id}, label: "registrar"})
	msg, err := nb.s.Send(id, "sats 82%", chat.SendOptions{Urgent: true, AckWithin: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	syncTo(t, nb, na)
	// Partitioned from here: a and b exchange nothing.
	clock.Add(31*time.Second + EscalateAfter)
	nb.s.CheckEscalations()
	nb.s.CheckEscalations()
	testEventually(t, "b escalates", func() bool { return len(escMessage(t, nb, id, msg).Escalations) == 1 })
	if _, err := na.s.Escalate(id, msg, []peer.ID{nd.d.id}); err != nil {
		t.Fatal("admin escalation:", err)
	}
	// d hears from a first, then from b.
	syncTo(t, na, nd)
	nd.s.CheckEscalations()
	waitEvent(t, nd, EventEscalated, msg)
	syncTo(t, nb, nd)
	syncTo(t, nb, na)
	syncTo(t, na, nb)
	nd.s.CheckEscalations()
	if n := countEvents(nd, EventEscalated); n != 0 {
		t.Fatalf("target alerted %d more times", n)
	}
	ea, eb, ed := escMessage(t, na, id, msg).Escalations, escMessage(t, nb, id, msg).Escalations, escMessage(t, nd, id, msg).Escalations
	if len(ea) != 1 || !slices.EqualFunc([][]chat.Escalation{eb, ed}, [][]chat.Escalation{ea, ea}, func(x, y []chat.Escalation) bool {
		return len(x) == 1 && x[0].ID == y[0].ID
	}) {
		t.Fatalf("standing escalations differ: %+v %+v %+v", ea, eb, ed)
	}
}

// TestExpiredUnreadEvent: retention deletes our message before anyone
// read it: the sender's app is told once, and the message is listed.
func TestExpiredUnreadEvent(t *testing.T) {
	clock, na, nb, _ := escWorld(t)
	id, err := na.s.Create("ward", []peer.ID{nb.d.id})
	if err != nil {
		t.Fatal(err)
	}
	if err := na.s.SetRetention(id, time.Hour); err != nil {
		t.Fatal(err)
	}
	msg, err := na.s.Send(id, "anyone?", chat.SendOptions{Urgent: true})
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(2 * time.Hour)
	if _, err := na.s.Expire(clock.Now()); err != nil {
		t.Fatal(err)
	}
	na.s.CheckEscalations()
	waitEvent(t, na, EventExpiredUnread, msg)
	na.s.CheckEscalations()
	if n := countEvents(na, EventExpiredUnread); n != 0 {
		t.Fatalf("told %d more times", n)
	}
	st, err := na.s.State(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.ExpiredUnread) != 1 || st.ExpiredUnread[0].ID != msg {
		t.Fatalf("expired unread %+v", st.ExpiredUnread)
	}
}
