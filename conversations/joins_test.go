package conversations

import (
	"crypto/rand"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/mesh"
)

// rtConversation is a real conversation from creator with victim in it:
// its tag, and what the creator publishes (the welcome first).
func rtConversation(t *testing.T, creator *rtDev, dir rtDir, victim peer.ID) ([]byte, []mesh.Checked) {
	t.Helper()
	r, out, err := chat.Create(creator.dev, dir, "ward", []peer.ID{victim})
	if err != nil {
		t.Fatal(err)
	}
	var envs []mesh.Checked
	for _, raw := range out.Envelopes {
		envs = append(envs, rtChecked(t, raw))
	}
	return r.Tag(), envs
}

// TestJoinsPerSenderBounded: an admitted colleague who is admin of its own
// conversations seals this device into as many as it likes, each a real
// one that opens. The device joins at most MaxJoinsPerSender on one
// sender's welcomes per JoinWindow; a colleague's normal conversations
// (another sender) still join meanwhile; a deferred welcome joins when it
// comes again after the window.
func TestJoinsPerSenderBounded(t *testing.T) {
	victim, mallory, alice := rtNewDev(t), rtNewDev(t), rtNewDev(t)
	dir := rtDir{victim.id: victim, mallory.id: mallory, alice.id: alice}
	now := time.Unix(1_700_000_000, 0)
	s, err := Open(Config{Device: victim.dev, Directory: dir, Store: dssync.MutexWrap(ds.NewMapDatastore()), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	joined := 0
	var deferred [][]mesh.Checked
	for range MaxJoinsPerSender + 8 {
		tag, envs := rtConversation(t, mallory, dir, victim.id)
		if s.Deliver(tag, envs, mallory.id) {
			joined++
		} else {
			deferred = append(deferred, envs)
		}
		now = now.Add(time.Second)
	}
	if joined != MaxJoinsPerSender {
		t.Fatalf("joined %d of mallory's conversations within the window (bound %d)", joined, MaxJoinsPerSender)
	}
	if n := len(s.Conversations()); n != MaxJoinsPerSender {
		t.Fatalf("%d conversations listed", n)
	}
	for i := range 10 {
		tag, envs := rtConversation(t, alice, dir, victim.id)
		if !s.Deliver(tag, envs, alice.id) {
			t.Fatalf("alice's conversation %d not joined while mallory is at the bound", i)
		}
	}
	// Mallory's window moves on: the deferred welcome, handed over again
	// by sync, joins.
	now = now.Add(JoinWindow)
	envs := deferred[0]
	if !s.Deliver(envs[0].Env.Tag, envs, mallory.id) {
		t.Fatal("a deferred welcome did not join after the window")
	}
	if n := len(s.Conversations()); n != MaxJoinsPerSender+11 {
		t.Fatalf("%d conversations listed", n)
	}
}

// rtSealedGhost is a welcome signed by from for a fresh random tag with a
// share sealed to victim, of a conversation whose history never comes: it
// never opens.
func rtSealedGhost(t *testing.T, from, victim *rtDev) mesh.Checked {
	t.Helper()
	tag := make([]byte, 16)
	rand.Read(tag)
	conv := make([]byte, 16)
	rand.Read(conv)
	e := e2e.New(tag, from.id, nil)
	to := []e2e.Recipient{{ID: victim.id, KEM: victim.key.KEM.PublicKey().Bytes()}}
	if err := e2e.SealWelcome(e, e2e.NewSecret(), e2e.EpochKeys{Conv: conv, Creator: []byte(from.id)}, []peer.ID{from.id, victim.id}, to); err != nil {
		t.Fatal(err)
	}
	e.Wall = time.Now().UnixMilli()
	if err := e.Sign(from.key.Identity); err != nil {
		t.Fatal(err)
	}
	raw, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return rtChecked(t, raw)
}

// TestUnopenedBoundAcrossSenders: colleagues who each stay within their
// bound of joins still cannot, together, make this device hold more than
// MaxUnopened conversations that never open.
func TestUnopenedBoundAcrossSenders(t *testing.T) {
	victim := rtNewDev(t)
	dir := rtDir{victim.id: victim}
	s, err := Open(Config{Device: victim.dev, Directory: dir, Store: dssync.MutexWrap(ds.NewMapDatastore())})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	joined := 0
	for range MaxUnopened/MaxUnopenedPerSender + 2 {
		m := rtNewDev(t)
		for range MaxJoinsPerSender {
			w := rtSealedGhost(t, m, victim)
			if s.Deliver(w.Env.Tag, []mesh.Checked{w}, m.id) {
				joined++
			}
		}
	}
	if joined != MaxUnopened || len(s.Tags()) != MaxUnopened {
		t.Fatalf("joined %d conversations that never open, holding %d tags (bound %d)", joined, len(s.Tags()), MaxUnopened)
	}
}
