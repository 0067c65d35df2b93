package node

import (
	"context"
	"errors"
	"math/big"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/identity"
)

func withStore(s ds.Batching) nodeOpt { return func(c *Config) { c.Store = s } }

// siteCA is a site issuing CA under root, as `medmesh ca init --parent`
// makes one.
func siteCA(t testing.TB, root *testCA, site string) *testCA {
	t.Helper()
	s, err := root.ca.NewSiteCA(site, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{ca: s, roots: root.roots}
}

// notSelectable checks that n offers revoked through none of its lookup
// paths, while it keeps reporting it as known and revoked.
func notSelectable(t *testing.T, n *Node, revoked peer.ID, staffID string) {
	t.Helper()
	for _, s := range n.Directory() {
		if s.PeerID == revoked.String() {
			t.Errorf("Directory lists the revoked device %s", revoked)
		}
	}
	if s, ok := n.LookupStaff(revoked.String()); ok {
		t.Errorf("LookupStaff by peer ID gives the revoked device: %s", s.PeerID)
	}
	if s, ok := n.LookupStaff(staffID); ok && s.PeerID == revoked {
		t.Error("LookupStaff by staff ID gives the revoked device")
	}
	if _, err := n.Recipient(revoked, time.Now()); !errors.Is(err, ErrRevoked) {
		t.Errorf("Recipient of the revoked device: %v, want ErrRevoked", err)
	}
	if known, rev := n.KnownStaff(revoked); !known || !rev {
		t.Errorf("KnownStaff of the revoked device: known=%v revoked=%v, want both", known, rev)
	}
}

// selectable checks that n offers id through every lookup path.
func selectable(t *testing.T, n *Node, id peer.ID, serial *big.Int) {
	t.Helper()
	listed := false
	for _, s := range n.Directory() {
		listed = listed || s.PeerID == id.String()
	}
	if !listed {
		t.Errorf("Directory does not list %s", id)
	}
	s, ok := n.LookupStaff(id.String())
	if !ok || s.Serial.Cmp(serial) != 0 {
		t.Errorf("LookupStaff by peer ID of %s: %v", id, ok)
	}
	if _, err := n.Recipient(id, time.Now()); err != nil {
		t.Errorf("Recipient of %s: %v", id, err)
	}
	if known, rev := n.KnownStaff(id); !known || rev {
		t.Errorf("KnownStaff of %s: known=%v revoked=%v", id, known, rev)
	}
}

// TestRevokedStaffNotSelectable: once a CRL revokes a colleague's
// certificate, no lookup path offers that device — by peer ID or by the
// staff ID it shares with its owner's other device — from the moment the
// CRL is applied, on the node that applied it, on a node that learnt it
// from the mesh, and after a restart. A device renewed under a new serial
// before its old serial was revoked stays selectable.
func TestRevokedStaffNotSelectable(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	mem := dssync.MutexWrap(ds.NewMapDatastore())
	alice := c.enrol(t, "alice", now)
	a := startNode(t, c, alice, withStore(mem))
	rita := c.enrol(t, "rita", now)
	ritaTablet := c.enrol(t, "rita", now) // the same staff member's other device
	vicOld := c.enrol(t, "vic", now)
	vic := c.enrolKey(t, vicOld.key, "vic", now.Add(time.Second)) // renewed
	r := startNode(t, c, rita, bootstrap(a))
	rt := startNode(t, c, ritaTablet, bootstrap(a))
	v := startNode(t, c, vic, bootstrap(a))
	eventually(t, 20*time.Second, "a's directory lists the three", func() bool { return len(a.Directory()) == 3 })
	eventually(t, 20*time.Second, "rita's tablet knows rita's phone", func() bool {
		_, ok := rt.LookupStaff(r.ID().String())
		return ok
	})
	if s, ok := a.LookupStaff("rita-id"); !ok || (s.PeerID != r.ID() && s.PeerID != rt.ID()) {
		t.Fatal("staff ID lookup failed before the revocation")
	}

	if ok, err := a.SubmitCRL(context.Background(), c.crl(t, 1, rita.chain[0].SerialNumber, vicOld.chain[0].SerialNumber)); !ok || err != nil {
		t.Fatalf("CRL: %v %v", ok, err)
	}
	// No window: the directory judges by the CRLs held when it is asked.
	notSelectable(t, a, r.ID(), "rita-id")
	if s, ok := a.LookupStaff("rita-id"); !ok || s.PeerID != rt.ID() {
		t.Error("staff ID lookup does not give the staff member's other device")
	}
	selectable(t, a, rt.ID(), ritaTablet.chain[0].SerialNumber)
	selectable(t, a, v.ID(), vic.chain[0].SerialNumber)
	if s, ok := a.LookupStaff("vic-id"); !ok || s.PeerID != v.ID() {
		t.Error("renewed device not found by staff ID")
	}
	if a.DirectorySize() != 3 {
		t.Errorf("directory holds %d entries, want the revoked one kept", a.DirectorySize())
	}

	eventually(t, 10*time.Second, "rita's tablet learns the CRL", func() bool {
		_, ok := rt.LookupStaff(r.ID().String())
		return !ok
	})
	notSelectable(t, rt, r.ID(), "rita-id")

	a.Close()
	again := startNode(t, c, alice, withStore(mem))
	notSelectable(t, again, r.ID(), "rita-id")
	selectable(t, again, v.ID(), vic.chain[0].SerialNumber)
}

// TestRenewedAfterRevocation: a revoked device that comes back under a
// renewed certificate (new serial, same key) is judged on that
// certificate: selectable again, KnownStaff no longer revoked.
func TestRenewedAfterRevocation(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	a := startNode(t, c, c.enrol(t, "alice", now))
	vicOld := c.enrol(t, "vic", now)
	vOld := startNode(t, c, vicOld, bootstrap(a))
	id := vOld.ID()
	eventually(t, 10*time.Second, "a knows vic", func() bool { _, ok := a.LookupStaff(id.String()); return ok })
	if _, err := a.SubmitCRL(context.Background(), c.crl(t, 1, vicOld.chain[0].SerialNumber)); err != nil {
		t.Fatal(err)
	}
	notSelectable(t, a, id, "vic-id")
	select {
	case <-vOld.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("revoked device did not stop")
	}
	vOld.Close()

	// a has blocked vic's peer ID; the renewed certificate reaches it
	// through b, who never met the old one.
	b := startNode(t, c, c.enrol(t, "bob", now), bootstrap(a))
	eventually(t, 10*time.Second, "b learns the CRL", func() bool { return b.Status().CRLNumber == 1 })
	// b publishes vic's entry as it admits vic: wait until b's gossipsub
	// counts a on the trust topic, or the message reaches nobody.
	eventually(t, 10*time.Second, "a and b on the trust topic", func() bool {
		return slices.Contains(b.PubSub().ListPeers(TrustTopic), a.ID()) && slices.Contains(a.PubSub().ListPeers(TrustTopic), b.ID())
	})
	vic := c.enrolKey(t, vicOld.key, "vic", now.Add(time.Second))
	startNode(t, c, vic, bootstrap(b))
	eventually(t, 10*time.Second, "b takes vic's renewed certificate", func() bool {
		s, ok := b.LookupStaff(id.String())
		return ok && s.Serial.Cmp(vic.chain[0].SerialNumber) == 0
	})
	// The entry reaches a on the trust topic — unless gossipsub has not
	// yet grafted a into b's mesh, when b forwards vic's own announcement
	// to nobody — and in any case by directory sync when a and b meet
	// again: make them meet again.
	a.Host().Network().ClosePeer(b.ID())
	if err := a.Host().Connect(context.Background(), peer.AddrInfo{ID: b.ID(), Addrs: b.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "a takes vic's renewed certificate", func() bool {
		s, ok := a.LookupStaff(id.String())
		return ok && s.Serial.Cmp(vic.chain[0].SerialNumber) == 0
	})
	selectable(t, a, id, vic.chain[0].SerialNumber)
}

// TestOnRevocation: the hook runs after a CRL that changes what is revoked,
// whether the CRL was submitted locally, arrived from an admitted peer, or
// came with a peer's presentation at admission.
func TestOnRevocation(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	a := startNode(t, c, c.enrol(t, "alice", now))
	b := startNode(t, c, c.enrol(t, "bob", now), bootstrap(a))
	eventually(t, 10*time.Second, "a and b admit each other", func() bool { return a.IsAdmitted(b.ID()) && b.IsAdmitted(a.ID()) })
	var atA, atB atomic.Int32
	a.OnRevocation(func() { atA.Add(1) })
	b.OnRevocation(func() { atB.Add(1) })
	x, y := c.enrol(t, "x", now), c.enrol(t, "y", now)

	submit := func(number int64, serials ...*big.Int) {
		t.Helper()
		if ok, err := a.SubmitCRL(context.Background(), c.crl(t, number, serials...)); !ok || err != nil {
			t.Fatalf("CRL %d: %v %v", number, ok, err)
		}
	}
	submit(1, x.chain[0].SerialNumber)
	eventually(t, 5*time.Second, "a's hook runs", func() bool { return atA.Load() == 1 })
	eventually(t, 10*time.Second, "b's hook runs for the CRL from a", func() bool { return atB.Load() == 1 })

	// A newer CRL revoking the same certificates changes nothing revoked;
	// one revoking another certificate does.
	submit(2, x.chain[0].SerialNumber)
	submit(3, x.chain[0].SerialNumber, y.chain[0].SerialNumber)
	eventually(t, 5*time.Second, "a's hook runs again", func() bool { return atA.Load() == 2 })
	eventually(t, 10*time.Second, "b's hook runs again", func() bool { return atB.Load() == 2 })

	// A peer's presentation at admission.
	cc := startNode(t, c, c.enrol(t, "carol", now))
	var atC atomic.Int32
	cc.OnRevocation(func() { atC.Add(1) })
	if err := cc.host.Connect(context.Background(), peer.AddrInfo{ID: a.ID(), Addrs: a.host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "c's hook runs for the CRL a presented", func() bool { return atC.Load() == 1 })

	a.Close()
	b.Close()
	if atA.Load() != 2 || atB.Load() != 2 {
		t.Fatalf("hooks ran %d and %d times, want 2", atA.Load(), atB.Load())
	}
}

// TestCRLChangesWhatIsRevoked: a newer CRL changes what is revoked when its
// set of revoked serials differs from the one it replaces.
func TestCRLChangesWhatIsRevoked(t *testing.T) {
	c := newCA(t, "General Hospital")
	n := startNode(t, c, c.enrol(t, "alice", time.Now()))
	x, y := big.NewInt(1001), big.NewInt(1002)
	steps := []struct {
		name    string
		crl     []byte
		newer   bool
		revokes bool
	}{
		{"first CRL, empty", c.crl(t, 1), true, false},
		{"x revoked", c.crl(t, 2, x), true, true},
		{"same set, newer number", c.crl(t, 3, x), true, false},
		{"same set, listed twice", c.crl(t, 4, x, x), true, false},
		{"y added", c.crl(t, 5, y, x), true, true},
		{"x taken off", c.crl(t, 6, y), true, true},
		{"older", c.crl(t, 2, x), false, false},
	}
	for _, s := range steps {
		change, err := n.adm.installCRL(s.crl)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if (change != nil) != s.newer || (change != nil && change.revokes != s.revokes) {
			t.Errorf("%s: change %+v, want newer=%v revokes=%v", s.name, change, s.newer, s.revokes)
		}
	}
}

// TestSiteCACRLSurvivesRestart: a CRL of a site issuing CA, once learnt,
// keeps the device it revokes out after the node restarts, before any peer
// hands the CRL over again — however the node first met the site CA.
func TestSiteCACRLSurvivesRestart(t *testing.T) {
	root := newCA(t, "General Hospital")
	north := siteCA(t, root, "North")
	now := time.Now()
	rita := north.enrol(t, "rita", now)

	cases := []struct {
		name string
		self *testCA // issuer of the node's own certificate
		// meet makes a meet the site CA; it reports whether rita is then
		// in a's directory.
		meet func(t *testing.T, a *Node) bool
	}{
		{"colleague admitted", root, func(t *testing.T, a *Node) bool {
			r := startNode(t, north, rita, bootstrap(a))
			eventually(t, 10*time.Second, "a knows rita", func() bool { _, ok := a.LookupStaff(r.ID().String()); return ok })
			return true
		}},
		{"refused chain only", root, func(t *testing.T, a *Node) bool {
			mallory, _ := identity.GenerateDeviceKey()
			in := newIntruder(t, mallory.Identity, presentChain(rita.chain))
			if err := in.h.Connect(context.Background(), peer.AddrInfo{ID: a.ID(), Addrs: a.host.Addrs()}); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "a refuses mallory", func() bool { return a.isBlocked(in.h.ID()) })
			return false
		}},
		{"own chain", north, func(*testing.T, *Node) bool { return false }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mem := dssync.MutexWrap(ds.NewMapDatastore())
			alice := tc.self.enrol(t, "alice", now)
			a := startNode(t, root, alice, withStore(mem))
			inDirectory := tc.meet(t, a)
			if ok, err := a.SubmitCRL(context.Background(), north.crl(t, 1, rita.chain[0].SerialNumber)); !ok || err != nil {
				t.Fatalf("site CA's CRL: %v %v", ok, err)
			}
			a.Close()

			// A long admission window: a refusal within the test can only
			// come from judging rita's chain, not from a timeout.
			again := startNode(t, root, alice, withStore(mem), func(c *Config) { c.AdmitTimeout = time.Minute })
			if got := again.Status().CRLNumber; got != 1 {
				t.Fatalf("CRL number after restart: %d", got)
			}
			if inDirectory {
				notSelectable(t, again, rita.key.PeerID(), "rita-id")
			}
			in := newIntruder(t, rita.key.Identity, presentChain(rita.chain))
			in.h.Connect(context.Background(), peer.AddrInfo{ID: again.ID(), Addrs: again.host.Addrs()})
			eventually(t, 10*time.Second, "rita refused", func() bool { return again.isBlocked(in.h.ID()) })
			if again.IsAdmitted(in.h.ID()) {
				t.Fatal("revoked device admitted after a restart")
			}
			eventually(t, 5*time.Second, "rita disconnected", func() bool {
				return again.host.Network().Connectedness(in.h.ID()) != network.Connected
			})
		})
	}
}

// TestSiteCRLLearntWithItsCA: a peer presenting a credential of a site CA
// this node has not met, then that CA's CRL, gets the CRL installed: the
// credential chain's CAs are learnt before the CRLs that follow it.
func TestSiteCRLLearntWithItsCA(t *testing.T) {
	root := newCA(t, "General Hospital")
	north := siteCA(t, root, "North")
	now := time.Now()
	b := startNode(t, root, north.enrol(t, "bob", now))
	revoked := north.enrol(t, "rita", now)
	if ok, err := b.SubmitCRL(context.Background(), north.crl(t, 1, revoked.chain[0].SerialNumber)); !ok || err != nil {
		t.Fatalf("site CA's CRL at a device of that site: %v %v", ok, err)
	}
	a := startNode(t, root, root.enrol(t, "alice", now))
	if err := a.host.Connect(context.Background(), peer.AddrInfo{ID: b.ID(), Addrs: b.host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a admits b", func() bool { return a.IsAdmitted(b.ID()) })
	eventually(t, 10*time.Second, "a installs the site CA's CRL b handed over", func() bool { return a.Status().CRLNumber == 1 })
}
