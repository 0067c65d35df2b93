package node

import (
	"github.com/medmesh/medmesh/internal/check"

	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/keywrap"
	"github.com/medmesh/medmesh/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, check.LeakOptions()...)
}

type testCA struct {
	ca    *identity.CA
	roots []*x509.Certificate
}

func newCA(t testing.TB, name string) *testCA {
	t.Helper()
	ca, err := identity.NewRootCA(name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{ca: ca, roots: []*x509.Certificate{ca.Cert}}
}

type device struct {
	key    *identity.DeviceKey
	chain  []*x509.Certificate // the staff chain
	bundle []*x509.Certificate // device.crt: the chain, then the credential
}

func (c *testCA) enrol(t testing.TB, name string, now time.Time, roles ...string) device {
	t.Helper()
	k, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	return c.enrolKey(t, k, name, now, roles...)
}

// enrolKey signs k's certificate with roles (default: doctor).
func (c *testCA) enrolKey(t testing.TB, k *identity.DeviceKey, name string, now time.Time, roles ...string) device {
	t.Helper()
	csr, err := identity.CreateCSR(k, identity.Details{Name: name, StaffID: name + "-id"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := identity.ParseCSR(csr)
	if err != nil {
		t.Fatal(err)
	}
	if len(roles) == 0 {
		roles = []string{"doctor"}
	}
	cert, err := c.ca.Sign(r, identity.SignOptions{Roles: roles}, now)
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

func (c *testCA) crl(t testing.TB, n int64, serials ...*big.Int) []byte {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
	}
	der, err := c.ca.CreateCRL(big.NewInt(n), entries, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

type nodeOpt func(*Config)

func startNode(t testing.TB, c *testCA, d device, opts ...nodeOpt) *Node {
	t.Helper()
	trust, err := identity.NewTrust(c.roots)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Key: d.key, Chain: d.bundle, Trust: trust,
		Store:  dssync.MutexWrap(ds.NewMapDatastore()),
		Listen: []string{"/ip4/127.0.0.1/tcp/0"},
	}
	if os.Getenv("MEDMESH_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, o := range opts {
		o(&cfg)
	}
	n, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func bootstrap(to ...*Node) nodeOpt {
	return func(c *Config) {
		for _, n := range to {
			c.Bootstrap = append(c.Bootstrap, peer.AddrInfo{ID: n.ID(), Addrs: n.host.Addrs()})
		}
	}
}

// eventually waits for cond with a deadline; no sleeping as synchronisation.
var eventually = check.Eventually

func admittedCount(n *Node) int {
	c := 0
	for _, p := range n.Status().Peers {
		if p.Admitted {
			c++
		}
	}
	return c
}

func TestThreeNodesAdmitEachOther(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	n1 := startNode(t, c, c.enrol(t, "one", now))
	n2 := startNode(t, c, c.enrol(t, "two", now), bootstrap(n1))
	n3 := startNode(t, c, c.enrol(t, "three", now), bootstrap(n1))
	for _, n := range []*Node{n1, n2, n3} {
		eventually(t, 20*time.Second, n.Self().Name+" admits both others", func() bool { return admittedCount(n) == 2 })
	}
	st := n2.Status()
	if len(st.Peers) != 2 {
		t.Fatalf("status lists %d peers, want each once: %+v", len(st.Peers), st.Peers)
	}
	eventually(t, 10*time.Second, "directory of n2 holds n1 and n3", func() bool { return len(n2.Directory()) == 2 })
	if s, ok := n3.LookupStaff("two-id"); !ok || s.PeerID != n2.ID() {
		t.Fatal("staff ID lookup failed")
	}
}

// intruder is a bare libp2p host with an ungated gossipsub on the trust
// topic: it presents whatever chain (or bytes) it is given and counts the
// trust-topic messages that reach it.
type intruder struct {
	h    host.Host
	recv atomic.Int64
}

func newIntruder(t *testing.T, key ed25519.PrivateKey, send func(network.Stream)) *intruder {
	t.Helper()
	priv, _ := crypto.UnmarshalEd25519PrivateKey(key)
	h, err := libp2p.New(libp2p.Identity(priv), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &intruder{h: h}
	h.SetStreamHandler(ProtoAdmit, func(s network.Stream) { s.Close() })
	h.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		go func() {
			s, err := h.NewStream(ctx, c.RemotePeer(), ProtoAdmit)
			if err != nil {
				return
			}
			send(s)
		}()
	}})
	ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithNoAuthor(), pubsub.WithMessageIdFn(MessageID))
	if err != nil {
		t.Fatal(err)
	}
	topic, _ := ps.Join(TrustTopic)
	sub, _ := topic.Subscribe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := sub.Next(ctx); err != nil {
				return
			}
			in.recv.Add(1)
		}
	}()
	t.Cleanup(func() {
		sub.Cancel()
		cancel()
		<-done
		h.Close()
	})
	return in
}

// presentChain presents chain's credential (or chain itself when it has
// none) as the first frame of /medmesh/admit/2.
func presentChain(chain []*x509.Certificate) func(network.Stream) {
	return func(s network.Stream) {
		_, cred := identity.SplitBundle(chain)
		if cred == nil {
			cred = chain
		}
		writeAdmitFrame(s, admitFrame{Kind: admitCredential, Chain: encodeChain(cred)})
		s.CloseWrite()
	}
}

func TestIntrudersKeptOut(t *testing.T) {
	c := newCA(t, "General Hospital")
	other := newCA(t, "Elsewhere")
	now := time.Now()
	good := c.enrol(t, "good", now)
	revoked := c.enrol(t, "revoked", now)
	n1 := startNode(t, c, c.enrol(t, "one", now))
	if _, err := n1.SubmitCRL(context.Background(), c.crl(t, 1, revoked.chain[0].SerialNumber)); err != nil {
		t.Fatal(err)
	}

	selfSigned := func() device {
		k, _ := identity.GenerateDeviceKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Mallory", SerialNumber: "M1"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Identity.Public(), k.Identity)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		return device{key: k, chain: []*x509.Certificate{cert}}
	}()
	expired := c.enrol(t, "expired", now.Add(-40*24*time.Hour))
	foreign := other.enrol(t, "foreign", now)
	mallory, _ := identity.GenerateDeviceKey()

	cases := []struct {
		name string
		key  ed25519.PrivateKey
		send func(network.Stream)
	}{
		{"foreign CA", foreign.key.Identity, presentChain(foreign.bundle)},
		{"self-signed", selfSigned.key.Identity, presentChain(selfSigned.chain)},
		{"expired", expired.key.Identity, presentChain(expired.bundle)},
		{"revoked", revoked.key.Identity, presentChain(revoked.bundle)},
		{"peer ID mismatch", mallory.Identity, presentChain(good.bundle)},
		{"garbage", mallory.Identity, func(s network.Stream) { s.Write([]byte("\xff\x00garbage")); s.CloseWrite() }},
		{"stall", mallory.Identity, func(s network.Stream) {}},
	}
	var intruders []*intruder
	for _, tc := range cases {
		if tc.name == "garbage" || tc.name == "stall" {
			k, _ := identity.GenerateDeviceKey()
			tc.key = k.Identity
		}
		in := newIntruder(t, tc.key, tc.send)
		if err := in.h.Connect(context.Background(), peer.AddrInfo{ID: n1.ID(), Addrs: n1.host.Addrs()}); err != nil && tc.name != "revoked" {
			t.Logf("%s: connect: %v", tc.name, err)
		}
		intruders = append(intruders, in)
	}
	// Real traffic on the trust topic while the intruders try their luck.
	n2 := startNode(t, c, good, bootstrap(n1))
	// Newer CRLs until one has travelled over the topic (gossip drops what
	// is published while a new peer's streams come up).
	number := int64(1)
	eventually(t, 10*time.Second, "n2 receives a trust-topic CRL", func() bool {
		number++
		if _, err := n1.SubmitCRL(context.Background(), c.crl(t, number, revoked.chain[0].SerialNumber)); err != nil {
			t.Fatal(err)
		}
		return n2.TrustMessages() > 0
	})
	for i, in := range intruders {
		eventually(t, 6*time.Second, cases[i].name+" intruder disconnected", func() bool {
			return n1.host.Network().Connectedness(in.h.ID()) != network.Connected
		})
		if n1.isAdmitted(in.h.ID()) {
			t.Errorf("%s intruder admitted", cases[i].name)
		}
		if got := in.recv.Load(); got != 0 {
			t.Errorf("%s intruder received %d trust-topic messages", cases[i].name, got)
		}
	}
	if !n1.isAdmitted(n2.ID()) {
		t.Fatal("good peer lost while intruders were refused")
	}
}

func TestRevocationSpreadsAndWipes(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	n1 := startNode(t, c, c.enrol(t, "one", now))
	n2 := startNode(t, c, c.enrol(t, "two", now), bootstrap(n1))
	d3 := c.enrol(t, "three", now)
	dir := t.TempDir()
	st3, err := store.Open(dir, []byte("pass"), store.WithKDF(keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	n3 := startNode(t, c, d3, bootstrap(n1), func(cfg *Config) {
		cfg.Store = st3
		cfg.OnRevoked = func() { st3.Wipe() }
	})
	for _, n := range []*Node{n1, n2, n3} {
		eventually(t, 20*time.Second, "full mesh", func() bool { return admittedCount(n) == 2 })
	}
	// Renewal: n2 renewed under a new serial; the old serial's revocation
	// must not touch it. (Its presented certificate is the current one.)
	posted := time.Now()
	if _, err := n1.SubmitCRL(context.Background(), c.crl(t, 1, d3.chain[0].SerialNumber)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{n1, n2} {
		eventually(t, 10*time.Second, "revoked n3 dropped", func() bool {
			return n.host.Network().Connectedness(n3.ID()) != network.Connected && !n.isAdmitted(n3.ID())
		})
	}
	t.Logf("revoked node dropped by all in %v", time.Since(posted))
	select {
	case <-n3.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("revoked node did not stop itself")
	}
	if _, err := os.Stat(filepath.Join(dir, store.KeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("revoked node's store key not wiped: %v", err)
	}
	if !n1.isBlocked(n3.ID()) || !n2.isBlocked(n3.ID()) {
		t.Fatal("revoked node not blocked by the gater")
	}
	err = n3.host.Connect(context.Background(), peer.AddrInfo{ID: n1.ID(), Addrs: n1.host.Addrs()})
	if err == nil {
		eventually(t, 10*time.Second, "reconnection refused", func() bool {
			return n1.host.Network().Connectedness(n3.ID()) != network.Connected
		})
	}
	if !n1.isAdmitted(n2.ID()) {
		t.Fatal("n1 lost n2")
	}
}

func TestRenewedCertificateStaysAdmitted(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	n1 := startNode(t, c, c.enrol(t, "one", now))
	old := c.enrol(t, "two", now)
	renewed := c.enrolKey(t, old.key, "two", now)
	n2 := startNode(t, c, renewed, bootstrap(n1))
	eventually(t, 10*time.Second, "n1 admits n2", func() bool { return n1.isAdmitted(n2.ID()) })
	if _, err := n1.SubmitCRL(context.Background(), c.crl(t, 1, old.chain[0].SerialNumber)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "n2 learns the CRL", func() bool { return n2.cfg.Trust.NewestCRLNumber() == 1 })
	if !n1.isAdmitted(n2.ID()) {
		t.Fatal("device renewed under a new serial was dropped for its old serial")
	}
	select {
	case <-n2.Done():
		t.Fatal("renewed device wiped itself over its old serial")
	default:
	}
}

func TestCRLFromForeignCARefused(t *testing.T) {
	c := newCA(t, "General Hospital")
	other := newCA(t, "Elsewhere")
	n1 := startNode(t, c, c.enrol(t, "one", time.Now()))
	if _, err := n1.SubmitCRL(context.Background(), other.crl(t, 5)); !errors.Is(err, identity.ErrUnknownCA) {
		t.Fatalf("foreign CRL: %v", err)
	}
	if _, err := n1.SubmitCRL(context.Background(), []byte("garbage")); !errors.Is(err, identity.ErrMalformed) {
		t.Fatalf("garbage CRL: %v", err)
	}
	if ok, err := n1.SubmitCRL(context.Background(), c.crl(t, 3)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if ok, err := n1.SubmitCRL(context.Background(), c.crl(t, 2)); ok || err != nil {
		t.Fatalf("older CRL: %v %v", ok, err)
	}
}

// TestFloodOfIntruders: many hosts without a certificate connect at once;
// each is refused, and the admitted colleague stays admitted throughout.
func TestFloodOfIntruders(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	n1 := startNode(t, c, c.enrol(t, "one", now))
	n2 := startNode(t, c, c.enrol(t, "two", now), bootstrap(n1))
	eventually(t, 10*time.Second, "n1 admits n2", func() bool { return n1.isAdmitted(n2.ID()) })
	var ins []*intruder
	for range 30 {
		k, _ := identity.GenerateDeviceKey()
		ins = append(ins, newIntruder(t, k.Identity, func(s network.Stream) { s.Write(make([]byte, 1<<16)); s.CloseWrite() }))
	}
	var wg sync.WaitGroup
	for _, in := range ins {
		wg.Go(func() { in.h.Connect(context.Background(), peer.AddrInfo{ID: n1.ID(), Addrs: n1.host.Addrs()}) })
	}
	wg.Wait()
	for _, in := range ins {
		eventually(t, 7*time.Second, "intruder out", func() bool {
			return n1.host.Network().Connectedness(in.h.ID()) != network.Connected
		})
	}
	if !n1.isAdmitted(n2.ID()) || admittedCount(n1) != 1 {
		t.Fatalf("after the flood: n2 admitted=%v, admitted=%d", n1.isAdmitted(n2.ID()), admittedCount(n1))
	}
	// A refused intruder is kept out by the gater for a while.
	if !n1.isBlocked(ins[0].h.ID()) {
		t.Fatal("refused intruder not blocked")
	}
	if err := ins[0].h.Connect(context.Background(), peer.AddrInfo{ID: n1.ID(), Addrs: n1.host.Addrs()}); err == nil {
		eventually(t, 10*time.Second, "blocked intruder dropped", func() bool {
			return n1.host.Network().Connectedness(ins[0].h.ID()) != network.Connected
		})
	}
}

// TestCorruptStore: a store whose values fail authentication stops the node
// with a clear error instead of running on half its state.
func TestCorruptStore(t *testing.T) {
	c := newCA(t, "General Hospital")
	mem := dssync.MutexWrap(ds.NewMapDatastore())
	st, err := store.Open(t.TempDir(), []byte("p"), store.WithBackend(mem), store.WithKDF(keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	st.Put(context.Background(), crlPrefix.ChildString("x"), c.crl(t, 1))
	res, _ := mem.Query(context.Background(), query.Query{})
	for r := range res.Next() {
		v := append([]byte(nil), r.Value...)
		v[len(v)-1] ^= 1
		mem.Put(context.Background(), ds.RawKey(r.Key), v)
	}
	d := c.enrol(t, "one", time.Now())
	trust, _ := identity.NewTrust(c.roots)
	_, err = New(context.Background(), Config{Key: d.key, Chain: d.bundle, Trust: trust, Store: st, Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
	if !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("corrupt store: %v", err)
	}
}

// TestPrekeysInDirectory: each node's signed prekey reaches its colleagues
// with its directory entry, persists across a restart, and is what a
// welcome is sealed to.
func TestPrekeysInDirectory(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	mem := dssync.MutexWrap(ds.NewMapDatastore())
	d1 := c.enrol(t, "one", now)
	n1 := startNode(t, c, d1, func(cfg *Config) { cfg.Store = mem })
	n2 := startNode(t, c, c.enrol(t, "two", now), bootstrap(n1))
	var rc e2e.Recipient
	eventually(t, 10*time.Second, "n2 knows n1's prekey", func() bool {
		r, err := n2.Recipient(n1.ID(), time.Now())
		rc = r
		return err == nil && r.PrekeyID != 0
	})
	own, _ := n1.ownPrekey(time.Now())
	if rc.PrekeyID != own.ID || string(rc.KEM) != string(own.KEM) {
		t.Fatal("n2 seals to a prekey n1 does not hold")
	}
	if _, err := n2.Recipient(peer.ID("nobody"), time.Now()); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("unknown peer: %v", err)
	}
	n1.Close()
	again := startNode(t, c, d1, func(cfg *Config) { cfg.Store = mem })
	if p, _ := again.ownPrekey(time.Now()); p.ID != own.ID {
		t.Fatal("prekey ring not restored from the store")
	}
}

// TestOfflineAndBack: a device cut off the network loses every connection
// and refuses new ones; back online, it reconnects by itself.
func TestOfflineAndBack(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	n1 := startNode(t, c, c.enrol(t, "one", now))
	n2 := startNode(t, c, c.enrol(t, "two", now), bootstrap(n1))
	eventually(t, 10*time.Second, "admitted", func() bool { return n1.isAdmitted(n2.ID()) })
	n2.SetOffline(true)
	eventually(t, 5*time.Second, "cut off", func() bool { return n1.host.Network().Connectedness(n2.ID()) != network.Connected })
	if err := n1.host.Connect(context.Background(), peer.AddrInfo{ID: n2.ID(), Addrs: n2.host.Addrs()}); err == nil {
		eventually(t, 10*time.Second, "refused while offline", func() bool { return n1.host.Network().Connectedness(n2.ID()) != network.Connected })
	}
	n2.SetOffline(false)
	eventually(t, 10*time.Second, "back and admitted", func() bool { return n1.isAdmitted(n2.ID()) && n2.isAdmitted(n1.ID()) })
}

// TestQuickReconnects: devices walking in and out of reach reconnect at
// once, so the close of the old connection and the open of the new one race
// in both nodes. Whatever order each side sees them in, both must admit
// each other again (on a libp2p mocknet, where the race is tight).
func TestQuickReconnects(t *testing.T) {
	mn, nodes := mocknetNodes(t, newCA(t, "General Hospital"), "a", "b")
	a, b := nodes[0], nodes[1]
	if _, err := mn.LinkPeers(a.ID(), b.ID()); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := mn.ConnectPeers(a.ID(), b.ID()); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, fmt.Sprintf("round %d: admitted both ways", i), func() bool {
			return a.IsAdmitted(b.ID()) && b.IsAdmitted(a.ID())
		})
		mn.DisconnectPeers(a.ID(), b.ID())
	}
}

// mocknetNodes starts one node per name, enrolled by c, on a fresh libp2p
// mocknet (peers unlinked: tests link and connect them).
func mocknetNodes(t *testing.T, c *testCA, names ...string) (mocknet.Mocknet, []*Node) {
	t.Helper()
	now := time.Now()
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	var nodes []*Node
	for i, name := range names {
		d := c.enrol(t, name, now)
		priv, err := crypto.UnmarshalEd25519PrivateKey(d.key.Identity)
		if err != nil {
			t.Fatal(err)
		}
		h, err := mn.AddPeer(priv, ma.StringCast(fmt.Sprintf("/ip4/100.64.0.%d/tcp/4242", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, startNode(t, c, d, func(cfg *Config) { cfg.Host = h }))
	}
	return mn, nodes
}

// logOnFailure gives every node started with it a debug logger into one
// buffer of the test's, printed (the last 64 KiB) only if the test fails:
// a network test that fails once in many runs leaves its story behind.
func logOnFailure(t testing.TB) func(name string) nodeOpt {
	var mu sync.Mutex
	var buf []byte
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		buf = append(buf, p...)
		if len(buf) > 1<<20 {
			buf = append(buf[:0], buf[len(buf)-(64<<10):]...)
		}
		return len(p), nil
	})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		tail := buf[max(0, len(buf)-(64<<10)):]
		t.Logf("node logs (last %d bytes):\n%s", len(tail), tail)
	})
	return func(name string) nodeOpt {
		return func(c *Config) {
			c.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
