package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	ds "github.com/ipfs/go-datastore"

	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
)

var prekeyKey = ds.NewKey("/keys/prekeys")

// loadPrekeys restores this device's prekey ring from the store, or starts
// one. The ring's private halves live only in the encrypted store.
func (n *Node) loadPrekeys(ctx context.Context) error {
	raw, err := n.cfg.Store.Get(ctx, prekeyKey)
	switch {
	case errors.Is(err, ds.ErrNotFound):
		n.prekeys = e2e.NewPrekeyRing(n.cfg.Key.Identity, n.ID())
	case err != nil:
		return fmt.Errorf("load prekeys: %w", err)
	default:
		if n.prekeys, err = e2e.UnmarshalPrekeyRing(raw, n.cfg.Key.Identity, n.ID()); err != nil {
			return fmt.Errorf("load prekeys: %w", err)
		}
		if n.prekeyID, n.storedPrekey, err = ringShape(raw); err != nil {
			return fmt.Errorf("load prekeys: %w", err)
		}
	}
	_, err = n.ownPrekey(n.cfg.Now())
	return err
}

// ownPrekey returns the current prekey, rotating (and persisting, and
// announcing) it when it is due; retired private halves past the window are
// deleted, in the store too.
func (n *Node) ownPrekey(now time.Time) (*e2e.Prekey, error) {
	n.pkMu.Lock()
	defer n.pkMu.Unlock()
	before := n.prekeyID
	p, err := n.prekeys.Current(now)
	if err != nil {
		return nil, err
	}
	n.curPrekey = p
	if _, err := n.expirePrekeysLocked(now, p.ID != before); err != nil {
		return nil, err
	}
	if p.ID != before {
		n.prekeyID = p.ID
		if before != 0 && n.topic != nil {
			w := n.entryWith(p)
			n.goOwned(func() { n.publish(trustMsg{Kind: kindEntry, Chain: w.Chain, Prekey: w.Prekey}) })
		}
	}
	return p, nil
}

// ExpirePrekeys deletes this device's retired prekey private halves that
// are past e2e.PrekeyWindow at now, from memory and from the store, and
// reports how many it deleted from the store. Halves chat expired in memory
// only (its Replica.Expire shares the ring) are deleted from the store
// here too, and counted. The ring is saved as a delete and a put in one
// batch, so an encrypted store (store.Store) purges the ring it replaces
// from disk within its purge delay. The node also does this every minute.
func (n *Node) ExpirePrekeys(now time.Time) (int, error) {
	n.pkMu.Lock()
	defer n.pkMu.Unlock()
	return n.expirePrekeysLocked(now, false)
}

// expirePrekeysLocked expires the ring at now and writes it to the store
// when it differs from the stored ring: it dropped private halves, or
// rotated is set (the ring holds a new prekey). It returns how many halves
// left the store. Callers hold pkMu.
func (n *Node) expirePrekeysLocked(now time.Time, rotated bool) (int, error) {
	n.prekeys.Expire(now)
	raw, err := n.prekeys.Marshal()
	if err != nil {
		return 0, fmt.Errorf("persist prekeys: %w", err)
	}
	_, held, err := ringShape(raw)
	if err != nil {
		return 0, fmt.Errorf("persist prekeys: %w", err)
	}
	stored := n.storedPrekey
	if rotated {
		stored++ // the ring's new prekey
	}
	if held == stored && !rotated || n.prekeysGone {
		return 0, nil
	}
	if err := n.saveRing(raw); err != nil {
		return 0, err
	}
	n.storedPrekey = held
	return max(stored-held, 0), nil
}

// saveRing replaces the stored ring with raw: a delete and a put in one
// batch, so that the store purges the ring it replaces (with the private
// halves just dropped) from disk, not only from view.
func (n *Node) saveRing(raw []byte) error {
	b, err := n.cfg.Store.Batch(n.ctx)
	if err == nil {
		err = b.Delete(n.ctx, prekeyKey)
	}
	if err == nil {
		err = b.Put(n.ctx, prekeyKey, raw)
	}
	if err == nil {
		err = b.Commit(n.ctx)
	}
	if err != nil {
		return fmt.Errorf("persist prekeys: %w", err)
	}
	return nil
}

// DestroyPrekeys deletes this device's prekey ring from the store, its
// private halves included, and never stores it again: the device's own
// certificate was revoked. (The ring in memory goes with the process.)
func (n *Node) DestroyPrekeys() error {
	n.pkMu.Lock()
	defer n.pkMu.Unlock()
	n.prekeysGone = true
	if err := n.cfg.Store.Delete(n.ctx, prekeyKey); err != nil {
		return fmt.Errorf("destroy prekeys: %w", err)
	}
	return nil
}

// ringShape reads the current prekey's ID and the number of prekeys held
// from a ring as e2e.PrekeyRing.Marshal encodes it (fields 1 and 2 of its
// ringFile): e2e's Expire does not report what it deleted, so the node
// compares the ring with the one it stored.
func ringShape(raw []byte) (current uint32, keys int, err error) {
	var ring struct {
		Current uint32            `cbor:"1,keyasint"`
		Keys    []cbor.RawMessage `cbor:"2,keyasint"`
	}
	if err := cbor.Unmarshal(raw, &ring); err != nil {
		return 0, 0, fmt.Errorf("%w: prekey ring: %v", identity.ErrMalformed, err)
	}
	return ring.Current, len(ring.Keys), nil
}

// ownEntry is this device's own directory entry.
func (n *Node) ownEntry() *dirEntry {
	n.pkMu.Lock()
	p := n.curPrekey
	n.pkMu.Unlock()
	if p == nil {
		return nil
	}
	d := n.entryWith(p)
	return &d
}

// entryWith is this device's directory entry with prekey p.
func (n *Node) entryWith(p *e2e.Prekey) dirEntry {
	d := dirEntry{Chain: encodeChain(n.cfg.Chain)}
	d.Prekey, _ = e2e.EncodePrekey(p)
	return d
}

// Prekeys is this device's prekey ring (chat opens welcomes with it).
func (n *Node) Prekeys() *e2e.PrekeyRing { return n.prekeys }
