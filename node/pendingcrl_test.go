package node

import (
	"bytes"
	"context"
	"crypto/x509"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestPendingCRLsBounded: a colleague flooding the list with CRLs of CAs
// nobody knows (it cannot verify them either) evicts its own, never the
// one another colleague forwarded; totals stay bounded.
func TestPendingCRLsBounded(t *testing.T) {
	var p pendingCRLs
	genuine := bytes.Repeat([]byte{1}, 100)
	p.hold("honest", genuine)
	p.hold("honest", genuine) // held once
	for i := range 40 {
		p.hold("flooder", bytes.Repeat([]byte{byte(i), byte(i >> 8), 2}, 50_000))
	}
	for i := range 200 { // many senders, one CRL each
		p.hold(peer.ID(rune(i)), bytes.Repeat([]byte{byte(i), 3}, 1000))
	}
	held := p.snapshot()
	if len(held) > maxPending || p.bytes > maxPendingBytes {
		t.Fatalf("%d CRLs, %d bytes held", len(held), p.bytes)
	}
	n := 0
	p.mu.Lock()
	for _, e := range p.list {
		if e.from == "flooder" {
			n++
		}
	}
	p.mu.Unlock()
	if n > maxPendingPerSender {
		t.Fatalf("flooder holds %d", n)
	}
	// The honest colleague's CRL is the oldest of a sender holding one:
	// many one-CRL senders may push it out only once the list is full of
	// them, and a single flooder never does.
	var q pendingCRLs
	q.hold("honest", genuine)
	for i := range 40 {
		q.hold("flooder", bytes.Repeat([]byte{byte(i), byte(i >> 8), 2}, 600_000))
	}
	if s := q.snapshot(); !bytes.Equal(s[0], genuine) {
		t.Fatal("a flooding colleague evicted another's pending CRL")
	}
	if q.bytes > maxPendingBytesPerSender+len(genuine) {
		t.Fatalf("%d bytes held", q.bytes)
	}
	q.drop(genuine)
	if q.count() != len(q.snapshot()) || slicesContain(q.snapshot(), genuine) {
		t.Fatal("drop")
	}
}

func slicesContain(l [][]byte, b []byte) bool {
	for _, x := range l {
		if bytes.Equal(x, b) {
			return true
		}
	}
	return false
}

// TestFederatedCRLReloadedWhenActiveAgain: a federated trust's site-CA
// CRL stored while the record was active is refused at load while it is
// withdrawn (its CA no longer verifies), and applied again when a newer
// record makes the federation active, without meeting the CA again.
func TestFederatedCRLReloadedWhenActiveAgain(t *testing.T) {
	a, b := newCA(t, "General Hospital"), newCA(t, "County")
	north := siteCA(t, b, "North")
	d := a.enrol(t, "one", time.Now())
	st := dssync.MutexWrap(ds.NewMapDatastore())
	n := startNode(t, a, d, withStore(st))
	submitFed(t, n, a.record(t, b, emergencyClinicians, 1, false))
	n.adm.learnIssuers([]*x509.Certificate{north.ca.Cert}, time.Now())
	if ok, err := n.SubmitCRL(context.Background(), north.crl(t, 1)); err != nil || !ok {
		t.Fatalf("B's site CRL: %v %v", ok, err)
	}
	submitFed(t, n, a.record(t, b, emergencyClinicians, 2, true))
	n.Close()

	again := startNode(t, a, d, withStore(st))
	if c := again.cfg.Trust.CRLNumber(north.ca.Cert); c != nil {
		t.Fatalf("B's site CRL applied while the federation is withdrawn: %v", c)
	}
	submitFed(t, again, a.record(t, b, emergencyClinicians, 3, false))
	if c := again.cfg.Trust.CRLNumber(north.ca.Cert); c == nil || c.Int64() != 1 {
		t.Fatalf("B's site CRL not applied again when the federation became active: %v", c)
	}
}

// TestFederatedPeerHandsOnlyItsTrustsCRLs: a device of trust B presenting
// CRLs cannot make us install (and spread trust-wide) the CRLs of a third
// trust C we also federate with; ours (which it passes on, as a device of
// ours hands B's to B's devices) and B's own are applied.
func TestFederatedPeerHandsOnlyItsTrustsCRLs(t *testing.T) {
	w := newFedWorld(t)
	c := newCA(t, "Third Hospital")
	submitFed(t, w.a1, w.a.record(t, c, emergencyClinicians, 1, false))
	b1 := w.startB(t, w.b.enrolIn(t, "bee", "Emergency", "clinician"))
	connectTo(t, b1, w.a1)
	eventually(t, 20*time.Second, "a1 admits b1 as federated", func() bool { return w.a1.IsFederated(b1.ID()) })
	w.a1.learnCRLs(b1.ID(), [][]byte{c.crl(t, 7), bytes.Repeat([]byte{9}, 64)})
	if n := w.a1.cfg.Trust.CRLNumber(c.ca.Cert); n != nil {
		t.Fatalf("a device of trust B made us install trust C's CRL: %v", n)
	}
	if w.a1.adm.pending.count() != 0 {
		t.Fatal("a federated peer's CRLs are held pending")
	}
	w.a1.learnCRLs(b1.ID(), [][]byte{w.b.crl(t, 2), w.a.crl(t, 3)})
	if n := w.a1.cfg.Trust.CRLNumber(w.b.ca.Cert); n == nil || n.Int64() != 2 {
		t.Fatalf("B's CRL from a B device: %v", n)
	}
	if n := w.a1.cfg.Trust.CRLNumber(w.a.ca.Cert); n == nil || n.Int64() != 3 {
		t.Fatalf("our CRL passed on by a B device: %v", n)
	}
	// C's CRL from our own staff still applies.
	if _, err := w.a1.SubmitCRL(context.Background(), c.crl(t, 7)); err != nil {
		t.Fatal(err)
	}
}

// TestHeldCRLSurvivesRestart: a CRL of a site CA this device has not met
// is held across a restart, applied when the CA is learnt, and then gone
// from the store; a corrupted record is dropped at load, not applied.
func TestHeldCRLSurvivesRestart(t *testing.T) {
	a := newCA(t, "General Hospital")
	north := siteCA(t, a, "North")
	d := a.enrol(t, "one", time.Now())
	st := dssync.MutexWrap(ds.NewMapDatastore())
	n := startNode(t, a, d, withStore(st))
	if _, err := n.SubmitCRL(context.Background(), north.crl(t, 4)); err == nil {
		t.Fatal("a CRL of a CA not met was applied")
	}
	if n.adm.pending.count() != 1 {
		t.Fatalf("held %d CRLs", n.adm.pending.count())
	}
	// A record that is not what its key says (a disk error, a tamperer
	// with the store but not the keys) is dropped at load.
	junk := pendingKey([32]byte{1})
	if err := st.Put(context.Background(), junk, []byte{0xa2, 0x01, 0x60, 0x02, 0x41, 0x00}); err != nil {
		t.Fatal(err)
	}
	n.Close()

	again := startNode(t, a, d, withStore(st))
	if got := again.adm.pending.count(); got != 1 {
		t.Fatalf("after a restart %d CRLs held, want 1", got)
	}
	if ok, _ := st.Has(context.Background(), junk); ok {
		t.Fatal("a corrupted held record was kept")
	}
	if c := again.cfg.Trust.CRLNumber(north.ca.Cert); c != nil {
		t.Fatalf("applied before the CA was met: %v", c)
	}
	again.adm.learnIssuers([]*x509.Certificate{north.ca.Cert}, time.Now())
	if c := again.cfg.Trust.CRLNumber(north.ca.Cert); c == nil || c.Int64() != 4 {
		t.Fatalf("the held CRL was not applied when the CA was learnt: %v", c)
	}
	if again.adm.pending.count() != 0 {
		t.Fatal("applied, yet still held")
	}
	res, err := st.Query(context.Background(), query.Query{Prefix: pendingPrefix.String(), KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := res.Rest(); len(left) != 0 {
		t.Fatalf("applied, yet %d records still stored as held", len(left))
	}
}
