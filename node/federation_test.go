package node

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/identity"
)

var emergencyClinicians = identity.Policy{Roles: []string{"clinician"}, Departments: []string{"Emergency"}, Scope: identity.ScopeInvited}

// enrolIn signs a device of c with a department and roles.
func (c *testCA) enrolIn(t *testing.T, name, dept string, roles ...string) device {
	t.Helper()
	k, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := identity.CreateCSR(k, identity.Details{Name: name, StaffID: name + "-id", Department: dept})
	if err != nil {
		t.Fatal(err)
	}
	r, err := identity.ParseCSR(csr)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.ca.Sign(r, identity.SignOptions{Roles: roles}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := c.ca.Bundle(cert)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := identity.ParseCertificates(bundle)
	chain, _ := identity.SplitBundle(all)
	return device{key: k, chain: chain, bundle: all}
}

// record is c's federation record naming other.
func (c *testCA) record(t *testing.T, other *testCA, p identity.Policy, n uint64, withdrawn bool) []byte {
	t.Helper()
	raw, err := c.ca.SignFederation(other.ca.Cert, p, n, withdrawn, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return identity.EncodeFederation(raw)
}

func submitFed(t *testing.T, n *Node, raw []byte) {
	t.Helper()
	if ok, err := n.SubmitFederation(context.Background(), raw); err != nil || !ok {
		t.Fatalf("SubmitFederation = %v, %v", ok, err)
	}
}

// askFor opens proto from `from` to `to`, writes nothing and reports
// whether any byte came back (a refused stream is reset unread).
func askFor(t *testing.T, from, to *Node, proto protocol.ID) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s, err := from.host.NewStream(ctx, to.ID(), proto)
	if err != nil {
		return false
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(12 * time.Second))
	s.CloseWrite()
	n, _ := io.Copy(io.Discard, s)
	return n > 0
}

// fedPair starts two devices of trust A (a2 bootstrapped to a1, which holds
// A's record for B) and a device of trust B (whose CA federates with A) of
// the given department and roles, bootstrapped to a1. B's CA carries A's
// name: a look-alike must still be a federated peer, never our staff.
type fedWorld struct {
	a, b   *testCA
	a1, a2 *Node
}

func newFedWorld(t *testing.T) *fedWorld {
	t.Helper()
	w := &fedWorld{a: newCA(t, "General Hospital"), b: newCA(t, "General Hospital")}
	w.a1 = startNode(t, w.a, w.a.enrol(t, "anchor", time.Now(), "anchor"))
	w.a2 = startNode(t, w.a, w.a.enrol(t, "two", time.Now()), bootstrap(w.a1))
	eventually(t, 20*time.Second, "a1 and a2 admit each other", func() bool { return w.a1.isAdmitted(w.a2.ID()) && w.a2.isAdmitted(w.a1.ID()) })
	submitFed(t, w.a1, w.a.record(t, w.b, emergencyClinicians, 1, false))
	eventually(t, 20*time.Second, "the record reaches a2", func() bool { return len(w.a2.Federations()) == 1 })
	return w
}

func (w *fedWorld) startB(t *testing.T, d device, opts ...nodeOpt) *Node {
	t.Helper()
	n := startNode(t, w.b, d, opts...)
	submitFed(t, n, w.b.record(t, w.a, identity.Policy{Scope: identity.ScopeInvited}, 1, false))
	return n
}

func connectTo(t *testing.T, from, to *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	from.host.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: to.host.Addrs()})
}

func TestFederatedPeerIsAClassApart(t *testing.T) {
	w := newFedWorld(t)
	b1 := w.startB(t, w.b.enrolIn(t, "two", "Emergency", "clinician", "admin", "anchor"))
	connectTo(t, b1, w.a1)
	eventually(t, 20*time.Second, "a1 admits b1 as federated", func() bool { return w.a1.IsFederated(b1.ID()) })
	eventually(t, 20*time.Second, "b1 admits a1 as federated", func() bool { return b1.IsFederated(w.a1.ID()) })
	s, f, ok := w.a1.FederatedStaff(b1.ID())
	if !ok || f.Other != identity.KeyOf(w.b.ca.Cert) || s.Department != "Emergency" {
		t.Fatalf("FederatedStaff = %+v, %v", s, ok)
	}
	// Never our staff, whatever its certificate names: no admission, no
	// roles (anchor, admin), not in the directory, not on the trust topic.
	if w.a1.IsAdmitted(b1.ID()) || w.a1.HasRole(b1.ID(), "anchor") || w.a1.HasRole(b1.ID(), "admin") {
		t.Fatal("a federated peer counts as our staff")
	}
	if _, ok := w.a1.LookupStaff("two-id"); ok {
		// a2's staff ID is "two-id" too: whatever LookupStaff finds must be a2.
		if s, _ := w.a1.LookupStaff("two-id"); s.PeerID == b1.ID() {
			t.Fatal("the federated look-alike entered our directory")
		}
	}
	for _, e := range w.a1.Directory() {
		if e.PeerID == b1.ID().String() {
			t.Fatal("a federated peer is in our directory")
		}
	}
	// The mesh's sync, held and carriage handlers, and the relay, wait on
	// AwaitAdmitted: it answers no for a federated peer.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if w.a1.AwaitAdmitted(ctx, b1.ID()) {
		t.Fatal("AwaitAdmitted admits a federated peer (mesh sync and carriage would serve it)")
	}
	if known, _ := w.a1.KnownStaff(b1.ID()); known {
		t.Fatal("a federated peer is known staff (its envelopes would pass the mesh's checks)")
	}
	if slices.Contains(w.a1.ps.ListPeers(TrustTopic), b1.ID()) {
		t.Fatal("a federated peer is a trust-topic peer")
	}
	// What it asks for, it does not get: the directory (and peer exchange
	// with it), the rota, federation records of its own making.
	for _, proto := range []protocol.ID{ProtoDirectory, ProtoRota, ProtoFederation} {
		if askFor(t, b1, w.a1, proto) {
			t.Fatalf("a federated peer was served %s", proto)
		}
	}
	if !w.a1.IsFederated(b1.ID()) {
		t.Fatal("asking cost the federated peer its admission (it should only be refused)")
	}
	// Our colleague's address was never handed to it.
	if b1.host.Network().Connectedness(w.a2.ID()) == network.Connected || len(b1.host.Peerstore().Addrs(w.a2.ID())) > 0 {
		t.Fatal("a federated peer learnt a colleague's address")
	}
}

func TestFederatedPeerRefused(t *testing.T) {
	w := newFedWorld(t)
	cases := map[string]device{
		"role outside the policy":       w.b.enrolIn(t, "nurse", "Emergency", "nurse"),
		"department outside the policy": w.b.enrolIn(t, "radiologist", "Radiology", "clinician"),
	}
	for name, d := range cases {
		t.Run(name, func(t *testing.T) {
			b := w.startB(t, d)
			connectTo(t, b, w.a2)
			eventually(t, 20*time.Second, "refused and blocked", func() bool {
				return w.a2.isBlocked(b.ID()) && w.a2.host.Network().Connectedness(b.ID()) != network.Connected
			})
			if w.a2.IsFederated(b.ID()) || w.a2.IsAdmitted(b.ID()) {
				t.Fatal("admitted outside the policy")
			}
		})
	}
	t.Run("no record", func(t *testing.T) {
		lone := startNode(t, w.a, w.a.enrol(t, "lone", time.Now()))
		b := w.startB(t, w.b.enrolIn(t, "ok", "Emergency", "clinician"))
		connectTo(t, b, lone)
		eventually(t, 20*time.Second, "refused", func() bool { return lone.isBlocked(b.ID()) })
		if lone.IsFederated(b.ID()) {
			t.Fatal("admitted with no record")
		}
	})
}

func TestFederationWithdrawnAndOlderIgnored(t *testing.T) {
	w := newFedWorld(t)
	b1 := w.startB(t, w.b.enrolIn(t, "bee", "Emergency", "clinician"))
	connectTo(t, b1, w.a2)
	eventually(t, 20*time.Second, "a2 admits b1 as federated", func() bool { return w.a2.IsFederated(b1.ID()) })
	// Withdrawn on a1; a2 learns it from a1 and drops b1.
	submitFed(t, w.a1, w.a.record(t, w.b, emergencyClinicians, 2, true))
	eventually(t, 20*time.Second, "a2 drops b1", func() bool {
		return !w.a2.IsFederated(b1.ID()) && w.a2.host.Network().Connectedness(b1.ID()) != network.Connected
	})
	// The older record, replayed, is ignored.
	if ok, err := w.a2.SubmitFederation(context.Background(), w.a.record(t, w.b, emergencyClinicians, 1, false)); ok || err != nil {
		t.Fatalf("older record: %v, %v", ok, err)
	}
	if fs := w.a2.Federations(); len(fs) != 1 || !fs[0].Withdrawn {
		t.Fatalf("a2 applies %+v", fs)
	}
	// Another device of B, inside the old policy, comes: refused.
	b2 := w.startB(t, w.b.enrolIn(t, "bee2", "Emergency", "clinician"))
	connectTo(t, b2, w.a2)
	eventually(t, 20*time.Second, "refused after withdrawal", func() bool { return w.a2.isBlocked(b2.ID()) })
	if w.a2.IsFederated(b2.ID()) || w.a2.IsFederated(b1.ID()) {
		t.Fatal("admitted after withdrawal")
	}
}

func TestFederationRecordForgeriesRefused(t *testing.T) {
	w := newFedWorld(t)
	c := newCA(t, "Third")
	// B's CA about a third trust; B's CA naming itself to us.
	for _, raw := range [][]byte{w.b.record(t, c, emergencyClinicians, 9, false), w.b.record(t, w.a, emergencyClinicians, 9, false)} {
		if _, err := w.a1.SubmitFederation(context.Background(), raw); !errors.Is(err, identity.ErrUnknownCA) && !errors.Is(err, identity.ErrMalformed) {
			t.Fatalf("record of another CA: %v", err)
		}
	}
	// A malicious colleague pushes a record B's CA signed, and one whose
	// signature it altered, straight on ProtoFederation: neither applies.
	good, err := w.a.ca.SignFederation(c.ca.Cert, emergencyClinicians, 50, false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	good[len(good)-1] ^= 1
	forged, _ := w.b.ca.SignFederation(c.ca.Cert, emergencyClinicians, 51, false, time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s, err := w.a2.host.NewStream(ctx, w.a1.ID(), ProtoFederation)
	if err != nil {
		t.Fatal(err)
	}
	mw := msgio.NewVarintWriter(s)
	mw.WriteMsg(good)
	mw.WriteMsg(forged)
	s.CloseWrite()
	s.SetDeadline(time.Now().Add(12 * time.Second))
	io.Copy(io.Discard, s) // the handler has read both once it closes
	s.Close()
	if fs := w.a1.Federations(); len(fs) != 1 || fs[0].Other != identity.KeyOf(w.b.ca.Cert) {
		t.Fatalf("a forged record was installed: %+v", fs)
	}
}

func TestFederatedCRLSpreadsAndRefuses(t *testing.T) {
	w := newFedWorld(t)
	d := w.b.enrolIn(t, "bee", "Emergency", "clinician")
	b1 := w.startB(t, d)
	connectTo(t, b1, w.a2)
	eventually(t, 20*time.Second, "a2 admits b1 as federated", func() bool { return w.a2.IsFederated(b1.ID()) })
	// B's CRL reaches A's anchor; it spreads to a2, which drops b1 and
	// hands it its own trust's CRL, so b1 wipes itself.
	if ok, err := w.a1.SubmitCRL(context.Background(), w.b.crl(t, 1, d.chain[0].SerialNumber)); err != nil || !ok {
		t.Fatalf("B's CRL at A's anchor: %v %v", ok, err)
	}
	eventually(t, 20*time.Second, "a2 applies B's CRL", func() bool {
		n := w.a2.cfg.Trust.CRLNumber(w.b.ca.Cert)
		return n != nil && n.Int64() == 1
	})
	eventually(t, 20*time.Second, "a2 drops b1", func() bool {
		return !w.a2.IsFederated(b1.ID()) && w.a2.isBlocked(b1.ID())
	})
	select {
	case <-b1.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("revoked federated device did not learn it is revoked")
	}
	// And on a1, which never met it: refused at admission.
	b1again := w.startB(t, d)
	connectTo(t, b1again, w.a1)
	eventually(t, 20*time.Second, "a1 refuses it", func() bool { return w.a1.isBlocked(b1again.ID()) })
	if w.a1.IsFederated(b1again.ID()) {
		t.Fatal("a revoked federated device was admitted")
	}
}

func TestFederationPersisted(t *testing.T) {
	a, b := newCA(t, "General Hospital"), newCA(t, "County")
	d := a.enrol(t, "one", time.Now())
	st := dssync.MutexWrap(ds.NewMapDatastore())
	n := startNode(t, a, d, withStore(st))
	submitFed(t, n, a.record(t, b, emergencyClinicians, 1, false))
	n.Close()
	again := startNode(t, a, d, withStore(st))
	if fs := again.Federations(); len(fs) != 1 || fs[0].Other != identity.KeyOf(b.ca.Cert) {
		t.Fatalf("after a restart: %+v", fs)
	}
	raws, err := StoredFederations(context.Background(), st)
	if err != nil || len(raws) != 1 {
		t.Fatalf("StoredFederations = %d, %v", len(raws), err)
	}
}
