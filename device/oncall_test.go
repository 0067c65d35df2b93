package device_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/archive"
	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/node"
	"github.com/medmesh/medmesh/rota"
)

// TestOnCallEscalationEndToEnd is issue 17's end-to-end story on real
// devices: a rota-admin defines the cardiology registrar on call (chain:
// the consultant on call); a registrar and a consultant take the roles.
// A device in the basement, connected through the site anchor, writes an
// urgent message to the registrar's role, with an archive member in the
// conversation. Nobody acknowledges: at the deadline the basement device
// re-alerts, a minute later it escalates along the rota to the consultant,
// who joins, reads the message and acknowledges it. The archive member
// filed the message, and every device's audit trail verifies, the
// escalation recorded.
func TestOnCallEscalationEndToEnd(t *testing.T) {
	const text = "Troponin rising in bay 2, please review"
	clk := &clock{}
	at := device.WithClock(clk.now)
	c := testnet.NewCA(t)
	anchor := testnet.Start(t, c, c.Enrol(t, "anchor", "anchor"), at)
	start := func(name string, roles ...string) *testnet.Peer {
		return testnet.Start(t, c, c.Enrol(t, name, roles...), at, testnet.Boot(anchor))
	}
	arch := start("archive", archive.Role)
	admin := start("rota admin", "rota-admin")
	reg := start("registrar", "cardio-registrar")
	cons := start("consultant", "cardio-consultant")
	base := start("basement")
	testnet.Knows(t, base, reg, cons, arch)
	testnet.Knows(t, reg, base, cons, arch)

	for _, d := range []node.RotaDraft{
		{Kind: rota.KindDefine, Role: "cardio-cons", Name: "Cardiology consultant on call", Requires: "cardio-consultant"},
		{Kind: rota.KindDefine, Role: "cardio-reg", Name: "Cardiology registrar on call", Requires: "cardio-registrar", Chain: []rota.RoleID{"cardio-cons"}},
	} {
		if _, err := admin.N.SubmitRota(d); err != nil {
			t.Fatal(err)
		}
	}
	holder := func(p *testnet.Peer, role rota.RoleID, who peer.ID) bool {
		r, ok := rota.Find(p.N.Roles(), role)
		return ok && slices.ContainsFunc(r.Holders, func(h rota.Holder) bool { return h.PeerID == who })
	}
	for _, x := range []struct {
		p    *testnet.Peer
		role rota.RoleID
	}{{reg, "cardio-reg"}, {cons, "cardio-cons"}} {
		testnet.Eventually(t, 20*time.Second, "the role is defined where it is taken", func() bool {
			_, ok := rota.Find(x.p.N.Roles(), x.role)
			return ok
		})
		if _, err := x.p.N.SubmitRota(node.RotaDraft{Kind: rota.KindTake, Role: x.role}); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 20*time.Second, "the basement device knows who is on call", func() bool {
		return holder(base, "cardio-reg", reg.ID) && holder(base, "cardio-cons", cons.ID)
	})

	// To the registrar's role, as the app does: the holders it knows now,
	// and the archive member, visibly.
	r, _ := rota.Find(base.N.Roles(), "cardio-reg")
	id, err := base.C.CreateForRole("Bay 2", []peer.ID{reg.ID, arch.ID}, nil, chat.RoleLink{ID: string(r.ID), Name: r.Name})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := base.C.Send(id, text, chat.SendOptions{Urgent: true, AckWithin: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, "the registrar has the message", func() bool { return standing(reg, id, text) })

	state := func(p *testnet.Peer) string {
		msgs, err := p.C.Messages(id)
		if err != nil {
			return ""
		}
		for _, m := range msgs {
			if m.ID == msg {
				return m.Escalation
			}
		}
		return ""
	}
	events, stop := base.C.Events()
	defer stop()
	clk.advance(31 * time.Second)
	base.C.CheckEscalations()
	if s := state(base); s != conversations.EscalationDue {
		t.Fatalf("after the deadline: %q, want %q", s, conversations.EscalationDue)
	}
	clk.advance(conversations.EscalateAfter)
	base.C.CheckEscalations()
	testnet.Eventually(t, 20*time.Second, "the sender sees the escalation", func() bool { return state(base) == conversations.EscalationEscalated })
	realerted := false
	for !realerted {
		select {
		case ev := <-events:
			realerted = ev.Kind == conversations.EventReAlert
		case <-time.After(10 * time.Second):
			t.Fatal("no re-alert event at the deadline")
		}
	}

	testnet.Eventually(t, 30*time.Second, "the consultant joins and reads the message", func() bool { return standing(cons, id, text) })
	if err := cons.C.Receipt(id, chat.Acknowledged, msg); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, "the sender sees it acknowledged", func() bool { return state(base) == conversations.EscalationAcknowledged })

	testnet.Eventually(t, 30*time.Second, "the archive member filed the message", func() bool {
		recs, err := arch.D.Filer().Filed(id)
		return err == nil && slices.ContainsFunc(recs, func(r archive.Record) bool { return r.Message == msg && r.Urgent })
	})

	for _, p := range []*testnet.Peer{base, reg, cons, arch} {
		if err := p.D.Audit().Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := p.D.Audit().Verify(context.Background(), nil); err != nil {
			t.Fatalf("%s: audit trail does not verify: %v", p.Ident.Name, err)
		}
	}
	es, err := base.D.Audit().Since(context.Background(), time.Time{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(es, func(e audit.Entry) bool {
		return e.Kind == audit.Escalated && slices.Contains(e.IDs.Ops, msg.String())
	}) {
		t.Fatal("the basement device's trail has no escalation of the message")
	}
}
