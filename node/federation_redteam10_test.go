package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/medmesh/medmesh/identity"
)

// TestRedteam10FederatedSiteCRLLost: trust B's CRLs travel to a device of
// ours only if it already knows the issuing CA that signed them, and a
// federated trust's issuing CAs are learnt only from that trust's devices
// met in person (no directory of B, and a device of B hands us only our own
// trust's CRLs, CRLsUnder). So a CRL of B's site CA, applied on a2 (which
// met the site through another B device) and spread from there, is dropped
// by a1 (ErrUnknownCA, never stored, never forwarded); the revoked B device
// then presents at a1, which learns the site CA from its own chain and
// admits it: "a revoked device of trust B is refused everywhere in trust A"
// fails on every device of ours that had not met that B site before.
func TestRedteam10FederatedSiteCRLLost(t *testing.T) {
	w := newFedWorld(t)
	north := siteCA(t, w.b, "North")
	good := w.startB(t, north.enrolIn(t, "good", "Emergency", "clinician"))
	connectTo(t, good, w.a2)
	eventually(t, 20*time.Second, "a2 admits good as federated (learns B's North CA)", func() bool { return w.a2.IsFederated(good.ID()) })

	stolen := north.enrolIn(t, "stolen", "Emergency", "clinician")
	// B's CRL revoking the stolen device is given to trust A (at a2, which
	// knows B's site CA) — as B's IT would hand it to one of our anchors.
	crl := north.crl(t, 1, stolen.chain[0].SerialNumber)
	if ok, err := w.a2.SubmitCRL(context.Background(), crl); err != nil || !ok {
		t.Fatalf("B's site CRL at a2: %v %v", ok, err)
	}
	// a2 spreads it (trust topic, presentations to a1); give it time to.
	eventually(t, 20*time.Second, "a2 holds B's site CRL", func() bool {
		n := w.a2.cfg.Trust.CRLNumber(north.ca.Cert)
		return n != nil && n.Int64() == 1
	})
	// a1 never met B's North CA: it cannot verify the CRL, so it holds it
	// (from a2's presentation or the trust topic) until it meets the CA.
	eventually(t, 20*time.Second, "a1 holds B's site CRL pending", func() bool { return w.a1.adm.pending.count() == 1 })
	if n := w.a1.cfg.Trust.CRLNumber(north.ca.Cert); n != nil {
		t.Fatalf("a1 installed a CRL of a CA it does not know: %v", n)
	}
	// Handed straight to a1 it is refused as unknown, and held once.
	if _, err := w.a1.SubmitCRL(context.Background(), crl); !errors.Is(err, identity.ErrUnknownCA) {
		t.Fatalf("a1 SubmitCRL of an unknown CA's CRL: %v", err)
	}
	if n := w.a1.adm.pending.count(); n != 1 {
		t.Fatalf("pending CRLs at a1 = %d, want 1 (the same CRL held once)", n)
	}

	bad := w.startB(t, stolen)
	connectTo(t, bad, w.a1)
	decided := false
	eventually(t, 20*time.Second, "a1 decides on the revoked B device", func() bool {
		decided = w.a1.IsFederated(bad.ID()) || w.a1.isBlocked(bad.ID())
		return decided
	})
	if w.a1.IsFederated(bad.ID()) {
		t.Fatal("a device revoked by its own trust's CRL is admitted as federated by a1 (B's site CRL was dropped for want of the site CA)")
	}
	if n := w.a1.cfg.Trust.CRLNumber(north.ca.Cert); n == nil || n.Int64() != 1 {
		t.Fatalf("a1 did not install the held CRL when it met the CA: %v", n)
	}
	if n := w.a1.adm.pending.count(); n != 0 {
		t.Fatalf("pending CRLs at a1 = %d after install", n)
	}
}
