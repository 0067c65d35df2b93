package device_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/internal/testnet"
)

// trail reads a device's audit entries from its store and verifies them.
func trail(t *testing.T, p *testnet.Peer) []audit.Entry {
	t.Helper()
	r := audit.NewReader(p.Ident.Store, p.Ident.Key.Identity.Public().(ed25519.PublicKey))
	if _, err := r.Verify(context.Background(), nil); err != nil {
		t.Fatalf("%s's trail: %v", p.Ident.Name, err)
	}
	es, err := r.Since(context.Background(), time.Time{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// has reports whether es holds an entry of kind about peer p (any peer if
// p is empty).
func has(es []audit.Entry, kind audit.Kind, p peer.ID) bool {
	return slices.ContainsFunc(es, func(e audit.Entry) bool { return e.Kind == kind && (p == "" || e.IDs.Peer == p.String()) })
}

// TestAuditTrailOfADevice: alice creates a conversation with bob and
// mallory, sends, edits and deletes a message and sends a photo, which
// bob views; a CRL revokes mallory; alice's device removes her; mallory's
// device wipes itself. Each trail verifies and holds what its device saw
// — by IDs only: no text, caption or title.
func TestAuditTrailOfADevice(t *testing.T) {
	const title, text, edit, caption = "Ward 9 board round", "Bed 3 needs a chest X-ray", "Bed 3 needs a CT", "left forearm"
	c := testnet.NewCA(t)
	aid, bid, mid := c.Enrol(t, "alice"), c.Enrol(t, "bob"), c.Enrol(t, "mallory")
	a := testnet.Start(t, c, aid)
	b := testnet.Start(t, c, bid, testnet.Boot(a))
	m := testnet.Start(t, c, mid, testnet.Boot(a))
	testnet.Knows(t, a, b, m)
	id, err := a.C.Create(title, []peer.ID{b.ID, m.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "joined", func() bool { return testnet.Joined(b, id, 3) && testnet.Joined(m, id, 3) })
	msg := testnet.Send(t, a, id, text)
	if err := a.C.Edit(id, msg, edit); err != nil {
		t.Fatal(err)
	}
	photo, err := a.C.SendPhoto(id, bytes.Repeat([]byte{0xd8}, 2000), []byte{1, 2, 3}, caption)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "bob has the photo", func() bool {
		_, err := b.C.Photo(id, photo, true)
		return err == nil
	})
	testnet.Eventually(t, 15*time.Second, "bob has the edit", func() bool { return slices.Contains(testnet.Texts(b, id), edit) })
	// Mallory's trail must show the message received: wait for it
	// before the CRL wipes her device.
	testnet.Eventually(t, 15*time.Second, "mallory has the message", func() bool { return slices.Contains(testnet.Texts(m, id), edit) })
	if err := a.C.Delete(id, msg); err != nil {
		t.Fatal(err)
	}
	if _, err := a.N.SubmitCRL(context.Background(), c.CRL(t, 1, mid)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "mallory's device wiped itself", func() bool {
		select {
		case <-m.D.Done():
			return true
		default:
			return false
		}
	})
	testnet.Eventually(t, 15*time.Second, "bob learns mallory was removed", func() bool {
		st, err := b.C.State(id)
		return err == nil && !slices.Contains(st.Members, m.ID) && len(st.Members) == 2
	})
	testnet.Eventually(t, 15*time.Second, "bob sees the delete", func() bool {
		b.D.Audit().Flush(context.Background())
		return has(trail(t, b), audit.Deleted, a.ID)
	})
	for _, p := range []*testnet.Peer{a, b, m} {
		p.Stop() // writes what is queued
	}

	ta, tb, tm := trail(t, a), trail(t, b), trail(t, m)
	for _, w := range []struct {
		who  string
		es   []audit.Entry
		kind audit.Kind
		peer peer.ID
	}{
		{"alice", ta, audit.Created, ""}, {"alice", ta, audit.Sent, ""}, {"alice", ta, audit.Edited, ""},
		{"alice", ta, audit.Deleted, ""}, {"alice", ta, audit.CRLApplied, ""}, {"alice", ta, audit.MemberRemoved, m.ID},
		{"bob", tb, audit.Received, a.ID}, {"bob", tb, audit.Edited, a.ID}, {"bob", tb, audit.Deleted, a.ID},
		{"bob", tb, audit.PhotoViewed, ""}, {"bob", tb, audit.MemberRemoved, m.ID},
		{"mallory", tm, audit.Received, a.ID}, {"mallory", tm, audit.Wiped, m.ID},
	} {
		if !has(w.es, w.kind, w.peer) {
			t.Errorf("%s's trail has no %s (peer %s): %v", w.who, w.kind, w.peer, kinds(w.es))
		}
	}
	if last := tm[len(tm)-1]; last.Kind != audit.Wiped {
		t.Errorf("mallory's last entry is %s, want wiped", last.Kind)
	}
	for _, e := range ta {
		if e.Kind == audit.CRLApplied && e.IDs.Serial != "1" {
			t.Errorf("CRL applied names number %q, want 1", e.IDs.Serial)
		}
		if e.Kind == audit.Edited && (len(e.IDs.Ops) != 2 || e.IDs.Ops[0] != msg.String()) {
			t.Errorf("edit entry names %v, want the message then the edit", e.IDs.Ops)
		}
	}
	for _, es := range [][]audit.Entry{ta, tb, tm} {
		for _, e := range es {
			for _, s := range []string{title, text, edit, caption} {
				if bytes.Contains(e.Body, []byte(s)) {
					t.Fatalf("entry %d (%s) holds %q", e.Seq, e.Kind, s)
				}
			}
			if e.IDs.Conversation != "" && e.IDs.Conversation != id.String() {
				t.Errorf("entry %d names conversation %s", e.Seq, e.IDs.Conversation)
			}
		}
	}
}

func kinds(es []audit.Entry) []audit.Kind {
	var out []audit.Kind
	for _, e := range es {
		out = append(out, e.Kind)
	}
	return out
}
