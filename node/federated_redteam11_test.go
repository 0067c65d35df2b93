package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"testing"
	"time"

	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// TestRedteam11ForeignCAClaimsOurStaffsKey: trust B's CA (malicious or
// compromised) signs a staff certificate for the Ed25519 key of one of
// OUR colleagues (a3: public, its peer ID) with a KEM key B holds, inside
// our policy (Emergency, clinician). A device of B introduces it on
// /medmesh/fedintro/1 (it is "of B's trust": takeFedEntry accepts it). a1
// has not yet got a3's directory entry (a new colleague, a site not met),
// so Node.Recipient falls through to fedRecipient and a welcome a1 seals
// to its own colleague a3 goes to B's key: B reads our conversation. A
// chain of another trust naming a peer ID must never stand for that
// device where our own CA may vouch for it.
func TestRedteam11ForeignCAClaimsOurStaffsKey(t *testing.T) {
	foreignCAClaim(t, "seal")
}

// TestRedteam11ForeignCAClaimStaysForeign: after the same introduction,
// a3 comes online and is admitted as our staff; Node.Foreign(a3) stays
// true (the fedBook entry is never dropped), so conversations.Promote
// refuses to make our own colleague an admin (ErrForeignAdmin), and the
// entry travels on in a1's fedbook to every colleague a1 admits.
func TestRedteam11ForeignCAClaimStaysForeign(t *testing.T) {
	foreignCAClaim(t, "foreign")
}

func foreignCAClaim(t *testing.T, mode string) {
	w := newFedWorld(t)
	b1 := w.startB(t, w.b.enrolIn(t, "bea", "Emergency", "clinician"))
	connectTo(t, b1, w.a1)
	eventually(t, 20*time.Second, "a1 and b1 admit each other as federated", func() bool {
		return w.a1.IsFederated(b1.ID()) && b1.IsFederated(w.a1.ID())
	})
	a3 := w.a.enrol(t, "a3", time.Now()) // our colleague, never met by a1 yet
	a3ID := a3.key.PeerID()

	// B's CA certifies a3's public key with B's own KEM key.
	bk, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	req := &identity.Request{
		Details:   identity.Details{Name: "a3", StaffID: "a3-id", Department: "Emergency"},
		PeerID:    a3ID,
		PublicKey: a3.key.Identity.Public().(ed25519.PublicKey),
		KEMKey:    bk.KEMPublic(),
	}
	cert, err := w.b.ca.Sign(req, identity.SignOptions{Roles: []string{"clinician"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := w.b.ca.Bundle(cert)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := identity.ParseCertificates(bundle)
	chain, _ := identity.SplitBundle(all)
	raw, err := detcbor.Marshal(dirEntry{Chain: encodeChain(chain)})
	if err != nil {
		t.Fatal(err)
	}

	// b1 introduces it to a1 over the wire, as any federated peer may.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := b1.host.NewStream(ctx, w.a1.ID(), ProtoFedIntro)
	if err != nil {
		t.Fatal(err)
	}
	if err := msgio.NewVarintWriter(s).WriteMsg(raw); err != nil {
		t.Fatal(err)
	}
	s.CloseWrite()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = s.Read(make([]byte, 1))
	s.Close()

	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := w.a1.Recipient(a3ID, time.Now()); mode == "seal" && err == nil && bytes.Equal(r.KEM, bk.KEMPublic()) {
			t.Fatalf("a1 seals to its own colleague a3 with trust B's key (Foreign(a3)=%v)", w.a1.Foreign(a3ID))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if mode == "foreign" {
		// a3 comes online and is admitted as our staff: a1 still calls it a
		// device of another trust (conversations refuses to promote it).
		n3 := startNode(t, w.a, a3, bootstrap(w.a1))
		eventually(t, 20*time.Second, "a1 admits a3", func() bool { return w.a1.isAdmitted(n3.ID()) })
		if w.a1.Foreign(a3ID) {
			t.Fatal("a1 still takes its admitted colleague a3 for a device of another trust")
		}
	}
}

// TestRedteam11OtherTrustEvictsFedBook: a1 federates with trusts B and C.
// b1 (B) is admitted and a member of conversations on a1. C's CA (hostile,
// or one C device replaying what C's CA minted) hands a1 maxFedBook+
// chains of C devices (over /medmesh/fedintro/1 from any C device: the
// entries are of its own trust). fedBook keeps maxFedBook, least recently
// met forgotten, with no share per trust: b1 — still connected and
// admitted — is forgotten. From then on a1 has no prekey or chain for b1
// (KnownFederated false: b1's envelopes are refused, nothing sealed to
// it), and Foreign(b1) is false, so conversations.Promote makes b1 an
// admin. One federated trust's CA evicts another trust's members.
func TestRedteam11OtherTrustEvictsFedBook(t *testing.T) {
	w := newFedWorld(t)
	c := newCA(t, "Third Trust")
	submitFed(t, w.a1, w.a.record(t, c, identity.Policy{Scope: identity.ScopeInvited}, 1, false))
	b1 := w.startB(t, w.b.enrolIn(t, "bea", "Emergency", "clinician"))
	connectTo(t, b1, w.a1)
	eventually(t, 20*time.Second, "a1 knows b1 as federated", func() bool { k, _ := w.a1.KnownFederated(b1.ID()); return k })

	kem, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	var root []*x509.Certificate
	for i := 0; i <= maxFedBook; i++ {
		pub, _, err := ed25519.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		id, err := identity.PeerIDFromKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := c.ca.Sign(&identity.Request{Details: identity.Details{Name: "c", StaffID: "c-id"}, PeerID: id, PublicKey: pub, KEMKey: kem.KEMPublic()},
			identity.SignOptions{Roles: []string{"clinician"}}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if root == nil {
			bundle, err := c.ca.Bundle(cert)
			if err != nil {
				t.Fatal(err)
			}
			all, _ := identity.ParseCertificates(bundle)
			chain, _ := identity.SplitBundle(all)
			root = chain[1:]
		}
		raw, err := detcbor.Marshal(dirEntry{Chain: encodeChain(append([]*x509.Certificate{cert}, root...))})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.a1.takeIntroduced(raw, identity.KeyOf(c.ca.Cert)); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	if !w.a1.IsFederated(b1.ID()) {
		t.Fatal("b1 was dropped")
	}
	if known, _ := w.a1.KnownFederated(b1.ID()); !known || !w.a1.Foreign(b1.ID()) {
		t.Fatalf("a1 forgot b1 (trust B, connected, admitted) after trust C's %d entries: KnownFederated %v, Foreign %v",
			maxFedBook+1, known, w.a1.Foreign(b1.ID()))
	}
}

// TestRedteam11OtherTrustNamedByItself: FederatedInfo.OtherTrust — what
// the app shows after a federated member's name ("Name · trust") — is the
// other root's own subject CN, which trust B picks. B's root calling
// itself "General Hospital" (our trust's name; both CAs here are) makes
// its device "Dr X · General Hospital" in our app, indistinguishable from
// a colleague of ours, with nothing our root signed to tell them apart.
func TestRedteam11OtherTrustNamedByItself(t *testing.T) {
	w := newFedWorld(t)
	b1 := w.startB(t, w.b.enrolIn(t, "bea", "Emergency", "clinician"))
	connectTo(t, b1, w.a1)
	eventually(t, 20*time.Second, "a1 admits b1 as federated", func() bool { return w.a1.IsFederated(b1.ID()) })
	ours := w.a.ca.Cert.Subject.CommonName
	for _, f := range w.a1.FederatedPeers() {
		if f.OtherTrust == ours {
			t.Fatalf("a federated device of another root is shown as of trust %q, our own trust's name", f.OtherTrust)
		}
	}
}
