package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// Pending CRLs. A CRL is verified against the CA that signed it, so a
// device accepts one only from a CA it knows — and it learns issuing CAs
// (a site CA of ours, or of a federated trust) only from chains it has
// seen. A CRL of a CA not met yet (trust B's site CA, known to the
// colleague that forwards it but not to us) would be dropped, and the
// device it revokes admitted here when it presents: it is held instead,
// unverified, and installed (then spread as any newer CRL) the moment the
// CA is learnt — in handleAdmit before the presenter is judged, or when a
// federation record is installed.
//
// The list is bounded: at most maxPendingPerSender CRLs and
// maxPendingBytesPerSender bytes from one sender (an admitted colleague,
// or the local API), at most maxPending CRLs and maxPendingBytes bytes in
// all; when over, the oldest CRL of the sender holding the most goes, so a
// colleague flooding it evicts its own first. The list is persisted (one
// record per CRL under pendingPrefix, written as it changes), so a device
// restarted before it meets the CA still applies the CRL then.
const (
	maxPending               = 64
	maxPendingBytes          = 16 << 20
	maxPendingPerSender      = 8
	maxPendingBytesPerSender = 4 << 20
)

type pendingCRL struct {
	from peer.ID // "" for the local API
	sum  [sha256.Size]byte
	der  []byte
}

type pendingCRLs struct {
	mu    sync.Mutex
	list  []pendingCRL // oldest first
	bytes int
}

// hold keeps der (a CRL whose issuer is unknown) from sender from. It
// reports whether der is new to the list, and the sums of the CRLs evicted
// to make room (der's own among them if it did not fit).
func (p *pendingCRLs) hold(from peer.ID, der []byte) (added bool, evicted [][sha256.Size]byte) {
	sum := sha256.Sum256(der)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.list {
		if e.sum == sum {
			return false, nil
		}
	}
	p.list = append(p.list, pendingCRL{from: from, sum: sum, der: der})
	p.bytes += len(der)
	for {
		n, b := 0, 0
		for _, e := range p.list {
			if e.from == from {
				n, b = n+1, b+len(e.der)
			}
		}
		switch {
		case n > maxPendingPerSender || b > maxPendingBytesPerSender:
			evicted = append(evicted, p.evictOldest(from))
		case len(p.list) > maxPending || p.bytes > maxPendingBytes:
			evicted = append(evicted, p.evictOldest(p.heaviest()))
		default:
			return true, evicted
		}
	}
}

// heaviest is the sender holding the most bytes. Callers hold p.mu.
func (p *pendingCRLs) heaviest() peer.ID {
	by := map[peer.ID]int{}
	var top peer.ID
	for _, e := range p.list {
		by[e.from] += len(e.der)
		if by[e.from] > by[top] {
			top = e.from
		}
	}
	return top
}

// evictOldest drops the oldest CRL of from, returning its sum. Callers
// hold p.mu.
func (p *pendingCRLs) evictOldest(from peer.ID) [sha256.Size]byte {
	for i, e := range p.list {
		if e.from == from {
			p.bytes -= len(e.der)
			p.list = append(p.list[:i:i], p.list[i+1:]...)
			return e.sum
		}
	}
	return [sha256.Size]byte{}
}

func (p *pendingCRLs) snapshot() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([][]byte, len(p.list))
	for i, e := range p.list {
		out[i] = e.der
	}
	return out
}

func (p *pendingCRLs) drop(der []byte) [sha256.Size]byte {
	sum := sha256.Sum256(der)
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, e := range p.list {
		if e.sum == sum {
			p.bytes -= len(e.der)
			p.list = append(p.list[:i:i], p.list[i+1:]...)
			break
		}
	}
	return sum
}

func (p *pendingCRLs) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.list)
}

// retryPending installs the held CRLs whose issuer is known now; each one
// installed, or refused for another reason than an unknown CA, leaves the
// list. It returns what the newer ones changed, for the node to spread.
func (a *admission) retryPending() []*crlChange {
	var out []*crlChange
	for _, der := range a.pending.snapshot() {
		change, err := a.installCRL(der)
		if errors.Is(err, identity.ErrUnknownCA) {
			continue
		}
		a.unstorePending(a.pending.drop(der))
		if change != nil {
			out = append(out, change)
		}
	}
	return out
}

// retryPendingCRLs is retryPending, spreading what it installed.
func (n *Node) retryPendingCRLs() {
	for _, c := range n.adm.retryPending() {
		n.spreadCRL(c)
	}
}

// crlOfTrust reports whether der is a CRL of root (an other root of a
// record) or of an issuing CA under it that the trust knows: what a
// federated peer may hand us. A CRL of a CA not known is not.
func (a *admission) crlOfTrust(der []byte, root identity.CAKey) bool {
	if len(der) > maxCRLBytes {
		return false
	}
	l, err := identity.ParseCRL(der)
	return err == nil && a.trust.CRLIssuedUnder(l, root)
}

// Persistence of the pending list.

var pendingPrefix = ds.NewKey("/trust/pending") // held CRLs, by SHA-256 of the DER

// pendingRecord is one held CRL as stored.
type pendingRecord struct {
	From string `cbor:"1,keyasint"` // the sender's peer ID; "" for the local API
	DER  []byte `cbor:"2,keyasint"`
}

func pendingKey(sum [sha256.Size]byte) ds.Key {
	return pendingPrefix.ChildString(hex.EncodeToString(sum[:]))
}

// holdCRL holds der from sender from, and persists the change.
func (a *admission) holdCRL(from peer.ID, der []byte) {
	if len(der) > maxCRLBytes {
		return
	}
	added, evicted := a.pending.hold(from, der)
	if added {
		rec, err := detcbor.Marshal(pendingRecord{From: string(from), DER: der})
		if err == nil {
			err = a.store.Put(a.ctx, pendingKey(sha256.Sum256(der)), rec)
		}
		if err != nil {
			a.log.Error("store a held CRL", "err", err)
		}
	}
	for _, sum := range evicted {
		a.unstorePending(sum)
	}
}

func (a *admission) unstorePending(sum [sha256.Size]byte) {
	if err := a.store.Delete(a.ctx, pendingKey(sum)); err != nil && !errors.Is(err, ds.ErrNotFound) {
		a.log.Error("delete a held CRL", "err", err)
	}
}

// loadPending restores the held CRLs, oldest order lost (the store returns
// them by key); a record that does not decode, or whose DER no longer
// matches its key, is deleted.
func (a *admission) loadPending(ctx context.Context) error {
	res, err := a.store.Query(ctx, query.Query{Prefix: pendingPrefix.String()})
	if err != nil {
		return fmt.Errorf("load held CRLs: %w", err)
	}
	var bad []ds.Key
	for r := range res.Next() {
		if r.Error != nil {
			return fmt.Errorf("load held CRLs: %w", r.Error)
		}
		var rec pendingRecord
		if detcbor.Unmarshal(r.Value, &rec, maxCRLBytes+256) != nil || len(rec.DER) > maxCRLBytes ||
			pendingKey(sha256.Sum256(rec.DER)).String() != r.Key {
			bad = append(bad, ds.NewKey(r.Key))
			continue
		}
		_, evicted := a.pending.hold(peer.ID(rec.From), rec.DER)
		for _, s := range evicted {
			bad = append(bad, pendingKey(s))
		}
	}
	res.Close()
	for _, k := range bad { // after the query: the store is not written while it is read
		if err := a.store.Delete(ctx, k); err != nil && !errors.Is(err, ds.ErrNotFound) {
			return fmt.Errorf("load held CRLs: %w", err)
		}
	}
	return nil
}
