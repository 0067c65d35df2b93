package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-msgio"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/rota"
)

// enrolAs enrols name at site with the certificate roles given.
func (c *testCA) enrolAs(t testing.TB, name, site string, roles ...string) device {
	t.Helper()
	k, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := identity.CreateCSR(k, identity.Details{Name: name, StaffID: name + "-id", Site: site})
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

func holderIDs(r rota.Role) []peer.ID {
	var out []peer.ID
	for _, h := range r.Holders {
		out = append(out, h.PeerID)
	}
	slices.Sort(out)
	return out
}

func roleOf(n *Node, id rota.RoleID) (rota.Role, bool) { return rota.Find(n.Roles(), id) }

// TestRotaSplitAcrossPartition: two registrars, cut off from each other,
// both take the role; once they meet both see two holders flagged split,
// until one hands over having seen both. New ops spread at once, and a
// device that was away catches up when it meets anyone of the site.
func TestRotaSplitAcrossPartition(t *testing.T) {
	c := newCA(t, "General Hospital")
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	var nodes []*Node
	for i, d := range []device{
		c.enrolAs(t, "admin", "north", rota.AdminRole),
		c.enrolAs(t, "ann", "north", "cardio-registrar"),
		c.enrolAs(t, "bob", "north", "cardio-registrar"),
	} {
		priv, _ := crypto.UnmarshalEd25519PrivateKey(d.key.Identity)
		h, err := mn.AddPeer(priv, ma.StringCast(fmt.Sprintf("/ip4/100.64.0.%d/tcp/4242", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, startNode(t, c, d, func(cfg *Config) { cfg.Host = h }))
	}
	admin, ann, bob := nodes[0], nodes[1], nodes[2]
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	connect(t, mn, admin, ann)

	if _, err := admin.SubmitRota(RotaDraft{Kind: rota.KindDefine, Role: "cardio-reg", Name: "Cardiology registrar on call", Requires: "cardio-registrar"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "ann learns the role", func() bool { _, ok := roleOf(ann, "cardio-reg"); return ok })
	if _, err := ann.SubmitRota(RotaDraft{Kind: rota.KindTake, Role: "cardio-reg"}); err != nil {
		t.Fatal(err)
	}
	// Bob was away: he catches up from ann.
	connect(t, mn, ann, bob)
	eventually(t, 10*time.Second, "bob catches up", func() bool {
		r, ok := roleOf(bob, "cardio-reg")
		return ok && slices.Equal(holderIDs(r), []peer.ID{ann.ID()})
	})

	// Partition: everyone apart.
	for _, p := range [][2]*Node{{admin, ann}, {ann, bob}, {admin, bob}} {
		mn.UnlinkPeers(p[0].ID(), p[1].ID())     //nolint:errcheck
		mn.DisconnectPeers(p[0].ID(), p[1].ID()) //nolint:errcheck
	}
	eventually(t, 10*time.Second, "apart", func() bool { return !ann.isAdmitted(bob.ID()) && !bob.isAdmitted(ann.ID()) })
	if _, err := ann.SubmitRota(RotaDraft{Kind: rota.KindTake, Role: "cardio-reg"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SubmitRota(RotaDraft{Kind: rota.KindTake, Role: "cardio-reg"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{ann, bob} {
		if r, _ := roleOf(n, "cardio-reg"); r.Split || len(r.Holders) != 1 || r.Holders[0].PeerID != n.ID() {
			t.Fatalf("%s before meeting: %+v", n.self.Name, r)
		}
	}
	// They meet.
	if _, err := mn.LinkPeers(ann.ID(), bob.ID()); err != nil {
		t.Fatal(err)
	}
	connect(t, mn, ann, bob)
	both := []peer.ID{ann.ID(), bob.ID()}
	slices.Sort(both)
	for _, n := range []*Node{ann, bob} {
		eventually(t, 10*time.Second, n.self.Name+" sees the split", func() bool {
			r, _ := roleOf(n, "cardio-reg")
			return r.Split && slices.Equal(holderIDs(r), both)
		})
	}
	// Bob hands over to ann having seen both.
	if _, err := bob.SubmitRota(RotaDraft{Kind: rota.KindHandover, Role: "cardio-reg", To: ann.ID()}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{ann, bob} {
		eventually(t, 10*time.Second, n.self.Name+" sees ann alone", func() bool {
			r, _ := roleOf(n, "cardio-reg")
			return !r.Split && slices.Equal(holderIDs(r), []peer.ID{ann.ID()})
		})
	}
}

// TestRotaRules: what the node refuses to sign or take in.
func TestRotaRules(t *testing.T) {
	c := newCA(t, "General Hospital")
	adminDev := c.enrolAs(t, "admin", "north", rota.AdminRole)
	annDev := c.enrolAs(t, "ann", "north", "cardio-registrar")
	nurseDev := c.enrolAs(t, "nurse", "north", "nurse")
	southDev := c.enrolAs(t, "otto", "south", "cardio-registrar", rota.AdminRole)
	store := dssync.MutexWrap(ds.NewMapDatastore())
	admin := startNode(t, c, adminDev, withStore(store))
	ann := startNode(t, c, annDev, bootstrap(admin))
	nurse := startNode(t, c, nurseDev, bootstrap(admin))
	south := startNode(t, c, southDev, bootstrap(admin))
	eventually(t, 10*time.Second, "all admitted", func() bool {
		return admin.isAdmitted(ann.ID()) && admin.isAdmitted(nurse.ID()) && admin.isAdmitted(south.ID())
	})

	if _, err := ann.SubmitRota(RotaDraft{Kind: rota.KindDefine, Role: "x", Name: "X", Requires: "nurse"}); !errors.Is(err, rota.ErrNotAllowed) {
		t.Fatalf("define by a registrar: %v", err)
	}
	if _, err := admin.SubmitRota(RotaDraft{Kind: rota.KindTake, Role: "nope"}); !errors.Is(err, rota.ErrUnknownRole) {
		t.Fatalf("take of an unknown role: %v", err)
	}
	if _, err := admin.SubmitRota(RotaDraft{Kind: rota.KindDefine, Role: "cardio-reg", Name: "Cardiology registrar on call", Requires: "cardio-registrar"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{ann, nurse} {
		eventually(t, 10*time.Second, n.self.Name+" learns the role", func() bool { _, ok := roleOf(n, "cardio-reg"); return ok })
	}
	if _, err := nurse.SubmitRota(RotaDraft{Kind: rota.KindTake, Role: "cardio-reg"}); !errors.Is(err, rota.ErrNotAllowed) {
		t.Fatalf("take by a nurse: %v", err)
	}
	if _, err := ann.SubmitRota(RotaDraft{Kind: rota.KindHandover, Role: "cardio-reg", To: nurse.ID()}); !errors.Is(err, rota.ErrNotAllowed) {
		t.Fatalf("hand-over to a nurse: %v", err)
	}
	// Another site's rota is not this one's: its role is unknown here.
	if _, err := south.SubmitRota(RotaDraft{Kind: rota.KindTake, Role: "cardio-reg"}); !errors.Is(err, rota.ErrUnknownRole) {
		t.Fatalf("take by another site: %v", err)
	}
	// An op signed by the nurse, pushed by hand past her node's checks, is
	// refused by the admin's node.
	forged, err := rota.Sign(nurseDev.key.Identity, rota.Draft{Kind: rota.KindTake, Role: "cardio-reg", Site: "north", Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.addRota([]*rota.Op{forged}); !errors.Is(err, rota.ErrNotAllowed) {
		t.Fatalf("nurse's take taken in: %v", err)
	}
	// Ann takes; then she is revoked: her take no longer counts, and an
	// op she signs afterwards is refused.
	if _, err := ann.SubmitRota(RotaDraft{Kind: rota.KindTake, Role: "cardio-reg"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "admin sees ann on call", func() bool {
		r, _ := roleOf(admin, "cardio-reg")
		return slices.Equal(holderIDs(r), []peer.ID{ann.ID()})
	})
	late, err := rota.Sign(annDev.key.Identity, rota.Draft{Kind: rota.KindRelease, Role: "cardio-reg", Site: "north", Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.SubmitCRL(context.Background(), c.crl(t, 1, annDev.chain[0].SerialNumber)); err != nil {
		t.Fatal(err)
	}
	if r, _ := roleOf(admin, "cardio-reg"); len(r.Holders) != 0 {
		t.Fatalf("revoked holder returned: %+v", r)
	}
	if _, err := admin.addRota([]*rota.Op{late}); !errors.Is(err, rota.ErrNotAllowed) {
		t.Fatalf("op of a revoked device taken in: %v", err)
	}

	// Restart: the rota comes back from the store.
	admin.Close()
	again := startNode(t, c, adminDev, withStore(store))
	if r, ok := roleOf(again, "cardio-reg"); !ok || r.Name != "Cardiology registrar on call" || len(r.Holders) != 0 {
		t.Fatalf("after restart: %+v %v", r, ok)
	}
	if _, err := again.SubmitRota(RotaDraft{Kind: rota.KindTake, Role: "cardio-reg"}); !errors.Is(err, rota.ErrNotAllowed) {
		t.Fatalf("admin without the required role took it: %v", err)
	}
}

// TestRotaRefusedBeforeAdmission: a peer that is not admitted cannot push
// rota ops, even validly signed ones of a colleague.
func TestRotaRefusedBeforeAdmission(t *testing.T) {
	c := newCA(t, "General Hospital")
	adminDev := c.enrolAs(t, "admin", "north", rota.AdminRole)
	admin := startNode(t, c, adminDev)
	if _, err := admin.SubmitRota(RotaDraft{Kind: rota.KindDefine, Role: "a", Name: "A", Requires: rota.AdminRole}); err != nil {
		t.Fatal(err)
	}
	// A take the admin may make, signed with its key, carried by an
	// outsider with no certificate.
	op, err := rota.Sign(adminDev.key.Identity, rota.Draft{Kind: rota.KindTake, Role: "a", Site: "north", Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := identity.GenerateDeviceKey()
	in := newIntruder(t, k.Identity, func(s network.Stream) {})
	if err := in.h.Connect(context.Background(), peer.AddrInfo{ID: admin.ID(), Addrs: admin.host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := in.h.NewStream(context.Background(), admin.ID(), ProtoRota)
	if err == nil {
		writeFrame(s, rotaOffer{IDs: [][]byte{op.ID[:]}}) //nolint:errcheck
		writeFrame(s, rotaOps{Ops: [][]byte{op.Raw()}})   //nolint:errcheck
		s.CloseWrite()
		r := msgio.NewVarintReaderSize(s, maxRotaMsg)
		var want rotaOffer
		if err := readFrame(r, &want, maxRotaOffer); err == nil {
			t.Fatalf("an outsider was answered: %+v", want)
		}
		io.Copy(io.Discard, s) //nolint:errcheck
		s.Close()
	}
	eventually(t, 10*time.Second, "outsider disconnected", func() bool {
		return admin.host.Network().Connectedness(in.h.ID()) != network.Connected
	})
	if r, _ := roleOf(admin, "a"); len(r.Holders) != 0 {
		t.Fatalf("an outsider's push was taken in: %+v", r)
	}
}
