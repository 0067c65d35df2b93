package node

import (
	"crypto/sha256"
	"errors"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/identity"
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
// colleague flooding it evicts its own first. It lives in memory only.
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

// hold keeps der (a CRL whose issuer is unknown) from sender from.
func (p *pendingCRLs) hold(from peer.ID, der []byte) {
	sum := sha256.Sum256(der)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.list {
		if e.sum == sum {
			return
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
			p.evictOldest(from)
		case len(p.list) > maxPending || p.bytes > maxPendingBytes:
			p.evictOldest(p.heaviest())
		default:
			return
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

// evictOldest drops the oldest CRL of from. Callers hold p.mu.
func (p *pendingCRLs) evictOldest(from peer.ID) {
	for i, e := range p.list {
		if e.from == from {
			p.bytes -= len(e.der)
			p.list = append(p.list[:i:i], p.list[i+1:]...)
			return
		}
	}
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

func (p *pendingCRLs) drop(der []byte) {
	sum := sha256.Sum256(der)
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, e := range p.list {
		if e.sum == sum {
			p.bytes -= len(e.der)
			p.list = append(p.list[:i:i], p.list[i+1:]...)
			return
		}
	}
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
		a.pending.drop(der)
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
