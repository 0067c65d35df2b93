package node

import (
	"testing"
	"time"

	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// FuzzFedEntry: whatever bytes a colleague sends on /medmesh/fedbook/1 or
// a federated peer on /medmesh/fedintro/1 decode to an error or to an
// entry with a chain and, if a prekey came, one its device signed —
// never a panic.
func FuzzFedEntry(f *testing.F) {
	ca := newCA(f, "County Hospital")
	d := ca.enrol(f, "bea", time.Now())
	id := d.key.PeerID()
	p, err := e2e.NewPrekeyRing(d.key.Identity, id).Current(time.Now())
	if err != nil {
		f.Fatal(err)
	}
	pk, _ := e2e.EncodePrekey(p)
	for _, e := range []dirEntry{{Chain: encodeChain(d.chain), Prekey: pk}, {Chain: encodeChain(d.chain)}, {Chain: [][]byte{{0x30, 0x03, 0x02, 0x01, 0x01}}}} {
		raw, err := detcbor.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		chain, who, prekey, err := decodeFedEntry(data)
		if err != nil {
			return
		}
		if len(chain) == 0 || who == "" {
			t.Fatal("an entry decoded without a chain or a device")
		}
		if prekey != nil && string(prekey.Owner) != string(who) {
			t.Fatal("a prekey of another device taken")
		}
	})
}
