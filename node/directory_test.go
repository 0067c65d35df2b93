package node

import (
	"errors"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
)

// TestDirectoryInStore: directory entries live in the store, the node keeps
// only an index; an entry is replaced only by a newer certificate or
// prekey, an entry held already is recognised without verification, and
// everything survives a restart.
func TestDirectoryInStore(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	mem := dssync.MutexWrap(ds.NewMapDatastore())
	self := c.enrol(t, "self", now)
	n := startNode(t, c, self, func(cfg *Config) { cfg.Store = mem; cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"} })

	colleague := c.enrol(t, "amira", now)
	ring := e2e.NewPrekeyRing(colleague.key.Identity, colleague.key.PeerID())
	p1, err := ring.Current(now)
	if err != nil {
		t.Fatal(err)
	}
	raw1, _ := e2e.EncodePrekey(p1)
	staff, err := n.judgeEntry(colleague.chain)
	if err != nil {
		t.Fatal(err)
	}
	if !n.addEntry(colleague.chain, staff, raw1, false) {
		t.Fatal("a new colleague was not added")
	}
	if n.addEntry(colleague.chain, staff, raw1, false) {
		t.Fatal("the same entry counted as a change")
	}
	if !n.dir.holds(dirEntry{Chain: encodeChain(colleague.chain), Prekey: raw1}) {
		t.Fatal("an entry held is not recognised")
	}
	if n.dir.holds(dirEntry{Chain: encodeChain(colleague.chain)}) {
		t.Fatal("an entry without the prekey matched the stored one")
	}
	r, err := n.Recipient(colleague.key.PeerID(), now)
	if err != nil || r.PrekeyID != p1.ID {
		t.Fatalf("recipient: %+v, %v", r, err)
	}

	// A newer prekey replaces the old one; a certificate-only entry (no
	// prekey) keeps it.
	p2, err := ring.Current(now.Add(e2e.PrekeyRotation + time.Hour))
	if err != nil || p2.ID == p1.ID {
		t.Fatalf("rotation: %v", err)
	}
	raw2, _ := e2e.EncodePrekey(p2)
	if !n.addEntry(colleague.chain, staff, raw2, false) {
		t.Fatal("a newer prekey was refused")
	}
	if n.addEntry(colleague.chain, staff, raw1, false) || n.addEntry(colleague.chain, staff, nil, false) {
		t.Fatal("an older entry replaced a newer one")
	}
	if r, _ := n.Recipient(colleague.key.PeerID(), now.Add(e2e.PrekeyRotation+time.Hour)); r.PrekeyID != p2.ID {
		t.Fatalf("recipient after rotation: prekey %d, want %d", r.PrekeyID, p2.ID)
	}
	// A renewed certificate replaces the old one and keeps the prekey.
	renewed := c.enrolKey(t, colleague.key, "amira", now)
	rs, err := n.judgeEntry(renewed.chain)
	if err != nil {
		t.Fatal(err)
	}
	if !n.addEntry(renewed.chain, rs, nil, false) {
		t.Fatal("a renewed certificate was refused")
	}
	if s, ok := n.LookupStaff("amira-id"); !ok || s.Serial.Cmp(rs.Serial) != 0 {
		t.Fatal("lookup by staff ID does not give the renewed certificate")
	}
	if !n.dir.holds(dirEntry{Chain: encodeChain(renewed.chain), Prekey: raw2}) {
		t.Fatal("the renewed entry did not keep the prekey")
	}

	// Restart on the same store: the directory is read back.
	n.Close()
	again := startNode(t, c, self, func(cfg *Config) { cfg.Store = mem })
	if again.DirectorySize() != 1 || len(again.Directory()) != 1 || again.Directory()[0].Name != "amira" {
		t.Fatalf("directory after restart: %+v", again.Directory())
	}
	if r, _ := again.Recipient(colleague.key.PeerID(), now.Add(e2e.PrekeyRotation+time.Hour)); r.PrekeyID != p2.ID {
		t.Fatal("prekey not restored")
	}

	// A damaged stored entry is an error, not a panic or a wrong key.
	if err := mem.Put(t.Context(), entryKey(colleague.key.PeerID()), []byte{0xff, 0x00}); err != nil {
		t.Fatal(err)
	}
	if _, err := again.Recipient(colleague.key.PeerID(), now); !errors.Is(err, identity.ErrMalformed) {
		t.Fatalf("damaged entry: %v", err)
	}
}

// TestDirectoryDelta: a device meeting a colleague again offers the entries
// that changed since its last send, and the colleague takes them: b learns
// of c, whom it never met, when it meets a again.
func TestDirectoryDelta(t *testing.T) {
	mn, nodes := mocknetNodes(t, newCA(t, "General Hospital"), "a", "b", "c")
	a, b, cc := nodes[0], nodes[1], nodes[2]
	meet := func(x, y *Node) {
		t.Helper()
		if _, err := mn.LinkPeers(x.ID(), y.ID()); err != nil {
			t.Fatal(err)
		}
		if _, err := mn.ConnectPeers(x.ID(), y.ID()); err != nil {
			t.Fatal(err)
		}
	}
	sent := func() uint64 {
		a.dir.mu.Lock()
		defer a.dir.mu.Unlock()
		return a.dir.sent[b.ID()]
	}
	meet(a, b)
	eventually(t, 10*time.Second, "a's directory sent to b", func() bool { return sent() > 0 })
	first := sent()
	// Unlink first: a node redials a colleague it loses, and on a link
	// still up the pair would stay together through c's meeting.
	mn.UnlinkPeers(a.ID(), b.ID())
	mn.DisconnectPeers(a.ID(), b.ID())
	eventually(t, 10*time.Second, "a and b apart", func() bool {
		return a.host.Network().Connectedness(b.ID()) != network.Connected && b.host.Network().Connectedness(a.ID()) != network.Connected
	})
	meet(a, cc)
	eventually(t, 10*time.Second, "a knows c", func() bool { _, ok := a.LookupStaff("c-id"); return ok })
	a.dir.mu.Lock()
	cSeq := a.dir.entries[cc.ID()].seq // c's entry changed after a's first send to b
	a.dir.mu.Unlock()
	if cSeq <= first {
		t.Fatalf("c's entry (change %d) is not newer than a's first send to b (%d)", cSeq, first)
	}
	meet(a, b)
	eventually(t, 10*time.Second, "b learns c from a", func() bool { _, ok := b.LookupStaff("c-id"); return ok })
	// b also hears of c on the trust topic; that a's record advanced past
	// c's change shows b took a delta that offered c's entry.
	eventually(t, 10*time.Second, "a's record of what b holds covers c", func() bool { return sent() >= cSeq })
}
