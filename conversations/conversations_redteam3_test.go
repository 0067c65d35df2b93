package conversations

// Red-team round 3: the Holder boundary and join-on-welcome.

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/mesh"
)

type rtDev struct {
	key *identity.DeviceKey
	id  peer.ID
	dev *chat.Device
}

func rtNewDev(t *testing.T) *rtDev {
	t.Helper()
	k, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	id := k.PeerID()
	return &rtDev{key: k, id: id, dev: &chat.Device{Key: k.Identity, ID: id, Prekeys: e2e.NewPrekeyRing(k.Identity, id), CertKEM: k.KEM}}
}

// rtDir seals to each device's certificate KEM key (prekey 0).
type rtDir map[peer.ID]*rtDev

func (d rtDir) Recipient(id peer.ID, _ time.Time) (e2e.Recipient, error) {
	x := d[id]
	if x == nil {
		return e2e.Recipient{}, errors.New("unknown")
	}
	return e2e.Recipient{ID: id, KEM: x.key.KEM.PublicKey().Bytes()}, nil
}

func rtChecked(t *testing.T, raw []byte) mesh.Checked {
	t.Helper()
	e, err := e2e.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Verify(); err != nil {
		t.Fatal(err)
	}
	return mesh.Checked{Env: e, Raw: raw}
}

// rtBogusWelcome is a welcome signed by from, for a fresh random tag, that
// names victim as a holder but seals it nothing (any admitted colleague
// can make one: one signature, no HPKE).
func rtBogusWelcome(t *testing.T, from *rtDev, victim peer.ID) mesh.Checked {
	t.Helper()
	tag := make([]byte, 16)
	rand.Read(tag)
	e := e2e.New(tag, from.id, nil)
	conv := make([]byte, 16)
	rand.Read(conv)
	if err := e2e.SealWelcome(e, e2e.NewSecret(), e2e.EpochKeys{Conv: conv, Creator: []byte(from.id)}, []peer.ID{from.id, victim}, nil); err != nil {
		t.Fatal(err)
	}
	e.Wall = time.Now().UnixNano()
	if err := e.Sign(from.key.Identity); err != nil {
		t.Fatal(err)
	}
	raw, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return rtChecked(t, raw)
}

// TestBogusWelcomeDoesNotBrickDevice: one welcome naming this device,
// from any colleague, for a tag it does not hold, used to make Deliver
// join an empty replica and persist a key record with no creator, which
// no later start could restore: the device never started again. A welcome
// that seals nothing to this device is not joined now, and the device
// restarts.
func TestBogusWelcomeDoesNotBrickDevice(t *testing.T) {
	victim, mallory := rtNewDev(t), rtNewDev(t)
	store := dssync.MutexWrap(ds.NewMapDatastore())
	dir := rtDir{victim.id: victim, mallory.id: mallory}
	s, err := Open(Config{Device: victim.dev, Directory: dir, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	w := rtBogusWelcome(t, mallory, victim.id)
	if s.Deliver(w.Env.Tag, []mesh.Checked{w}, mallory.id) {
		t.Fatal("joined on a welcome that seals nothing to this device")
	}
	if n := len(s.Conversations()); n != 0 {
		t.Logf("visible conversations: %d", n)
	}
	s.Close()
	if _, err := Open(Config{Device: victim.dev, Directory: dir, Store: store}); err != nil {
		t.Fatalf("after one bogus welcome from a colleague the device cannot reopen its conversations: %v", err)
	}
}

// TestRedteam3HonestAddThenRestartBricksDevice: the honest path. Alice
// adds Bob to an existing conversation; the rekey welcome reaches Bob's
// inbox before the history it depends on (that is what inboxes are for).
// Bob joins, the welcome waits for its deps, the key record is persisted
// with no conversation ID or creator; Bob's phone restarts before sync
// brings the history, and his device no longer opens.
func TestAddWelcomeBeforeHistoryThenRestart(t *testing.T) {
	alice, bob, carol := rtNewDev(t), rtNewDev(t), rtNewDev(t)
	dir := rtDir{alice.id: alice, bob.id: bob, carol.id: carol}
	ra, _, err := chat.Create(alice.dev, dir, "ward", []peer.ID{carol.id})
	if err != nil {
		t.Fatal(err)
	}
	out, err := ra.Add(bob.id)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Welcomes) == 0 {
		t.Fatal("no welcome for bob")
	}
	store := dssync.MutexWrap(ds.NewMapDatastore())
	s, err := Open(Config{Device: bob.dev, Directory: dir, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	w := rtChecked(t, out.Welcomes[0])
	if !s.Deliver(w.Env.Tag, []mesh.Checked{w}, alice.id) {
		t.Fatal("bob did not join on his welcome")
	}
	s.Close()
	if _, err := Open(Config{Device: bob.dev, Directory: dir, Store: store}); err != nil {
		t.Fatalf("a device restarted after receiving an honest add-welcome before its history cannot reopen: %v", err)
	}
}
