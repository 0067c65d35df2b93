package testnet

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/identity"
)

// FederationRecord is c's signed record (number n) naming other's root
// with policy p (zero: scope "invited", no limits), as it travels.
func (c *CA) FederationRecord(t testing.TB, other *CA, p identity.Policy, n uint64, withdrawn bool) []byte {
	t.Helper()
	if p.Scope == "" {
		p.Scope = identity.ScopeInvited
	}
	raw, err := c.CA.SignFederation(other.CA.Cert, p, n, withdrawn, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return identity.EncodeFederation(raw)
}

// Federate installs a federation record on each of ps.
func Federate(t testing.TB, rec []byte, ps ...*Peer) {
	t.Helper()
	for _, p := range ps {
		if _, err := p.N.SubmitFederation(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
}

// Connect dials q from p (on loopback).
func Connect(t testing.TB, p, q *Peer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.N.Host().Connect(ctx, peer.AddrInfo{ID: q.ID, Addrs: q.N.Host().Addrs()}); err != nil {
		t.Fatalf("connect %s to %s: %v", p.Ident.Name, q.Ident.Name, err)
	}
}

// Federated waits until p and q admit each other as federated peers.
func Federated(t testing.TB, p, q *Peer) {
	t.Helper()
	Eventually(t, 20*time.Second, p.Ident.Name+" and "+q.Ident.Name+" admit each other as federated", func() bool {
		return p.N.IsFederated(q.ID) && q.N.IsFederated(p.ID)
	})
}
