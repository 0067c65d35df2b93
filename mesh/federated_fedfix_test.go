package mesh_test

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/mesh"
)

// TestFederatedWelcomeNamingOurCreatorRefused: bea (trust B) knows the ID
// of anna's conversation T (she was told it, or removed from it) and seals
// alice a genuine share for T naming anna as its creator: the share opens
// and its tag matches, but a device of another trust welcomes us only into
// a conversation it created, so alice does not join T (and never fetches
// T's ciphertext for bea, nor counts it among her unopened ones).
func TestFederatedWelcomeNamingOurCreatorRefused(t *testing.T) {
	w := newFedWorld(t)
	tID, err := w.anna.C.Create("anna's ward", nil)
	if err != nil {
		t.Fatal(err)
	}
	tTag := chat.TagOf(tID, w.anna.ID)
	to, err := w.bea.N.Recipient(w.alice.ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e := e2e.New(tTag, w.bea.ID, nil)
	e.Wall = time.Now().UnixMilli()
	secret := e2e.NewSecret()
	keys := e2e.EpochKeys{Conv: tID[:], Creator: []byte(w.anna.ID)}
	if err := e2e.SealWelcome(e, secret, keys, []peer.ID{w.alice.ID, w.bea.ID}, []e2e.Recipient{to}); err != nil {
		t.Fatal(err)
	}
	if err := e.Sign(w.bea.Ident.Key.Identity); err != nil {
		t.Fatal(err)
	}
	raw, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d, err := e2e.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if w.alice.C.Deliver(tTag, []mesh.Checked{{Env: d, Raw: raw}}, w.bea.ID) {
		t.Fatal("alice joined anna's conversation T on a welcome from bea, a device of trust B that did not create it")
	}
	if w.alice.C.Shares(w.bea.ID, tTag) {
		t.Fatal("alice shares anna's conversation T with bea")
	}
}
