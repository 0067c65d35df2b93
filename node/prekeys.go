package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/medmesh/medmesh/e2e"
)

var prekeyKey = ds.NewKey("/keys/prekeys")

// ErrUnknownPeer: a colleague the directory has no entry for.
var ErrUnknownPeer = errors.New("unknown peer")

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
	}
	_, err = n.ownPrekey(n.cfg.Now())
	return err
}

// ownPrekey returns the current prekey, rotating (and persisting, and
// announcing) it when it is due; retired private halves past the window are
// deleted.
func (n *Node) ownPrekey(now time.Time) (*e2e.Prekey, error) {
	n.pkMu.Lock()
	defer n.pkMu.Unlock()
	before := n.prekeyID
	p, err := n.prekeys.Current(now)
	if err != nil {
		return nil, err
	}
	n.prekeys.Expire(now)
	n.curPrekey = p
	if p.ID != before {
		n.prekeyID = p.ID
		raw, err := n.prekeys.Marshal()
		if err != nil {
			return nil, err
		}
		if err := n.cfg.Store.Put(n.ctx, prekeyKey, raw); err != nil {
			return nil, fmt.Errorf("persist prekeys: %w", err)
		}
		if before != 0 && n.topic != nil {
			w := n.entryWith(p)
			n.goOwned(func() { n.publish(trustMsg{Kind: kindEntry, Chain: w.Chain, Prekey: w.Prekey}) })
		}
	}
	return p, nil
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
