package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/medmesh/medmesh/discovery"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// dialRecorder is a host that records every dial (Connect) asked of it.
// Dials of the peers on the mocknet at their address go through, but
// those of unreachable ones, which fail; any other dial hangs until its
// context ends, as a dial to a black-holed address does.
type dialRecorder struct {
	host.Host
	mn mocknet.Mocknet

	mu          sync.Mutex
	dialled     []peer.AddrInfo
	running     int
	most        int
	unreachable map[peer.ID]bool
}

func (r *dialRecorder) Connect(ctx context.Context, ai peer.AddrInfo) error {
	r.mu.Lock()
	r.dialled = append(r.dialled, ai)
	r.running++
	r.most = max(r.most, r.running)
	unreachable := r.unreachable[ai.ID]
	r.mu.Unlock()
	if unreachable {
		return errors.New("unreachable")
	}
	defer func() {
		r.mu.Lock()
		r.running--
		r.mu.Unlock()
	}()
	if h := r.mn.Host(ai.ID); h != nil && slices.ContainsFunc(ai.Addrs, func(a ma.Multiaddr) bool {
		return slices.ContainsFunc(h.Addrs(), a.Equal)
	}) {
		return r.Host.Connect(ctx, ai)
	}
	<-ctx.Done()
	return ctx.Err()
}

func (r *dialRecorder) record() (dialled []peer.AddrInfo, most int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]peer.AddrInfo(nil), r.dialled...), r.most
}

// pxMesh starts one node per name on a mocknet, every pair linked, none
// connected; each node's host records its dials, and opts configure the
// first node.
func pxMesh(t *testing.T, c *testCA, opts []nodeOpt, names ...string) (mocknet.Mocknet, []*dialRecorder, []*Node) {
	t.Helper()
	now := time.Now()
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	var recs []*dialRecorder
	var nodes []*Node
	for i, name := range names {
		d := c.enrol(t, name, now)
		priv, err := crypto.UnmarshalEd25519PrivateKey(d.key.Identity)
		if err != nil {
			t.Fatal(err)
		}
		var h host.Host
		if h, err = mn.AddPeer(priv, ma.StringCast(fmt.Sprintf("/ip4/100.64.0.%d/tcp/4242", i+1))); err != nil {
			t.Fatal(err)
		}
		rec := &dialRecorder{Host: h, mn: mn, unreachable: map[peer.ID]bool{}}
		recs = append(recs, rec)
		var o []nodeOpt
		if i == 0 {
			o = opts
		}
		nodes = append(nodes, startNode(t, c, d, append([]nodeOpt{func(cfg *Config) { cfg.Host = rec }}, o...)...))
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	return mn, recs, nodes
}

func connect(t *testing.T, mn mocknet.Mocknet, a, b *Node) {
	t.Helper()
	if _, err := mn.ConnectPeers(a.ID(), b.ID()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "admitted both ways", func() bool { return a.isAdmitted(b.ID()) && b.isAdmitted(a.ID()) })
}

// pxFlood is an exchange naming n-1 made-up peers of 16 addresses each:
// four the policy allows (10.x) and twelve it refuses — the internet, a
// DNS name, multicast, broadcast, unspecified, link-local, loopback (the
// sender is not on this machine), bare UDP, a relay, and private addresses
// naming another peer ID; and, first, an entry whose peer ID is garbage.
func pxFlood(t *testing.T, n int) []peerAddrs {
	t.Helper()
	other := randomID(t)
	var refused [][]byte
	for _, s := range []string{
		"/ip4/8.8.8.8/tcp/53", "/ip6/2001:4860:4860::8888/udp/443/quic-v1", "/dns4/victim.example.com/tcp/443",
		"/ip4/224.0.0.1/tcp/4001", "/ip4/255.255.255.255/tcp/4001", "/ip4/0.0.0.0/tcp/4001", "/ip4/169.254.1.1/tcp/4001",
		"/ip4/127.0.0.1/tcp/4001", "/ip4/10.9.9.9/udp/4001", "/ip4/10.8.8.8/tcp/4001/p2p/" + other.String() + "/p2p-circuit",
		"/ip4/10.7.7.7/tcp/4001/p2p/" + other.String(), "/ip4/10.6.6.6/tcp/4001/p2p/" + other.String(),
	} {
		refused = append(refused, ma.StringCast(s).Bytes())
	}
	out := []peerAddrs{{ID: []byte("garbage"), Addrs: [][]byte{ma.StringCast("/ip4/10.0.0.1/tcp/1").Bytes()}}}
	for i := range n - 1 {
		id := cheapID(t, i)
		addrs := slices.Clone(refused)
		for _, s := range []string{
			fmt.Sprintf("/ip4/10.1.%d.%d/tcp/4001", i/256, i%256),
			fmt.Sprintf("/ip4/10.2.%d.%d/udp/4001/quic-v1", i/256, i%256),
			fmt.Sprintf("/ip4/10.3.%d.%d/tcp/4001/p2p/%s", i/256, i%256, id),
			fmt.Sprintf("/ip4/10.4.%d.%d/tcp/4001", i/256, i%256),
		} {
			addrs = append(addrs, ma.StringCast(s).Bytes())
		}
		out = append(out, peerAddrs{ID: []byte(id), Addrs: addrs})
	}
	return out
}

// cheapID is a well-formed peer ID (a SHA-256 multihash) no key stands
// behind.
func cheapID(t *testing.T, i int) peer.ID {
	t.Helper()
	sum := sha256.Sum256([]byte(fmt.Sprint("made-up peer ", i)))
	return peer.ID(append([]byte{0x12, 0x20}, sum[:]...)) // multihash: SHA-256, 32 bytes
}

func randomID(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestPeerExchangeFlood: an admitted colleague names 4,096 made-up peers
// of 16 addresses each, twice, whose dials all hang. The victim dials at
// most SourceQuota of them, never more than a few at once, each at no more
// than MaxLearntAddrs addresses and only addresses the policy allows (the
// claimed ID, never another); its goroutines and dial queue stay bounded;
// the attacker is scored down for the garbage; and a newcomer an honest
// colleague names is still dialled and admitted while the flood's dials
// hang, though the attacker named it first at an address where it is not.
func TestPeerExchangeFlood(t *testing.T) {
	c := newCA(t, "General Hospital")
	mn, recs, nodes := pxMesh(t, c, nil, "victim", "honest", "attacker", "newcomer")
	victim, honest, attacker, newcomer := nodes[0], nodes[1], nodes[2], nodes[3]
	rec := recs[0]
	// The victim is out of the newcomer's reach (behind a NAT, say): only
	// the victim's dial can bring them together.
	recs[3].mu.Lock()
	recs[3].unreachable[victim.ID()] = true
	recs[3].mu.Unlock()
	connect(t, mn, victim, honest)
	connect(t, mn, victim, attacker)

	goroutines := runtime.NumGoroutine()
	flood := pxFlood(t, 4096)
	// The attacker names the newcomer first, where it is not.
	flood[1] = peerAddrs{ID: []byte(newcomer.ID()), Addrs: [][]byte{ma.StringCast("/ip4/10.66.66.66/tcp/4242").Bytes()}}
	for range 2 {
		if !attacker.exchange(victim.ID(), directoryMsg{Peers: flood}, nil) {
			t.Fatal("the victim did not take the exchange")
		}
	}
	eventually(t, 5*time.Second, "the flood's first dials start", func() bool { _, most := rec.record(); return most > 0 })

	// The newcomer meets the honest colleague, who names it to the victim.
	start := time.Now()
	connect(t, mn, honest, newcomer)
	t.Logf("newcomer admitted by honest after %v", time.Since(start))
	// The victim's first dial, at the attacker's address, hangs for the
	// dial timeout; the retry has the honest colleague's address too.
	// (10 s of dial timeout, a 1 s backoff, then admission: 40 s allows a loaded machine.)
	eventually(t, 40*time.Second, "the victim admits the newcomer", func() bool { return victim.isAdmitted(newcomer.ID()) })
	t.Logf("newcomer admitted by victim after %v", time.Since(start))

	dialled, most := rec.record()
	if most > 4 {
		t.Errorf("%d dials at once", most)
	}
	allowed := map[string]bool{}
	for i, p := range flood[1:] {
		id, _ := peer.IDFromBytes(p.ID)
		for _, s := range []string{"/ip4/10.1.%d.%d/tcp/4001", "/ip4/10.2.%d.%d/udp/4001/quic-v1", "/ip4/10.3.%d.%d/tcp/4001", "/ip4/10.4.%d.%d/tcp/4001"} {
			allowed[id.String()+fmt.Sprintf(s, i/256, i%256)] = true
		}
	}
	fakes := map[peer.ID]bool{}
	dialledNewcomer := false
	for _, ai := range dialled {
		if ai.ID == newcomer.ID() {
			dialledNewcomer = true
			continue
		}
		fakes[ai.ID] = true
		if len(ai.Addrs) > 4 {
			t.Errorf("%d addresses dialled for one peer", len(ai.Addrs))
		}
		for _, a := range ai.Addrs {
			if !allowed[ai.ID.String()+a.String()] {
				t.Errorf("dialled %s at %s, outside the policy", ai.ID, a)
			}
		}
	}
	if !dialledNewcomer {
		t.Error("the victim did not dial the newcomer its honest colleague named")
	}
	if len(fakes) > discovery.SourceQuota {
		t.Errorf("%d made-up peers dialled, quota %d", len(fakes), discovery.SourceQuota)
	}
	if g := runtime.NumGoroutine() - goroutines; g > 200 {
		t.Errorf("%d goroutines more during the flood", g)
	}
	if st := victim.disc.Stats(); st.Pending > discovery.SourceQuota+1 {
		t.Errorf("%d peers wait to be dialled", st.Pending)
	}
	if victim.score.misdeeds(attacker.ID()) < 1 || victim.score.misdeeds(honest.ID()) != 0 {
		t.Errorf("misdeeds: attacker %.1f, honest %.1f", victim.score.misdeeds(attacker.ID()), victim.score.misdeeds(honest.ID()))
	}
	if !victim.isAdmitted(honest.ID()) {
		t.Error("the victim lost its honest colleague")
	}
}

// TestLearntPeers: an exchange's entries become dial targets to the
// claimed ID only; a relay path becomes the bare circuit through its relay
// (once), whatever host the entry named for the relay.
func TestLearntPeers(t *testing.T) {
	self, a, b := randomID(t), randomID(t), randomID(t)
	pa := func(id peer.ID, addrs ...string) peerAddrs {
		p := peerAddrs{ID: []byte(id)}
		for _, s := range addrs {
			p.Addrs = append(p.Addrs, ma.StringCast(s).Bytes())
		}
		return p
	}
	got, malformed := learntPeers([]peerAddrs{
		pa(self, "/ip4/10.0.0.1/tcp/1"),
		pa(a, "/ip4/10.0.0.2/tcp/1/p2p/"+a.String(), "/ip4/10.0.0.3/tcp/1/p2p/"+b.String(), "/ip4/10.0.0.4/tcp/1",
			"/ip4/10.0.0.7/tcp/1/p2p/"+b.String()+"/p2p-circuit", "/ip4/10.0.0.8/tcp/1/p2p/"+b.String()+"/p2p-circuit/p2p/"+a.String()),
		pa(a, "/ip4/10.0.0.5/tcp/1"),
		pa(b, "/ip4/10.0.0.6/tcp/1/p2p/"+a.String()),
	}, self)
	if malformed || len(got) != 1 || got[0].ID != a || len(got[0].Addrs) != 3 ||
		got[0].Addrs[0].String() != "/ip4/10.0.0.2/tcp/1" || got[0].Addrs[1].String() != "/ip4/10.0.0.4/tcp/1" ||
		!got[0].Addrs[2].Equal(discovery.Circuit(b)) {
		t.Fatalf("learnt %v (malformed %v)", got, malformed)
	}
	var many []peerAddrs
	for range 2 * maxPXScan {
		many = append(many, pa(randomID(t), "/ip4/10.0.0.1/tcp/1"))
	}
	if got, _ := learntPeers(many, self); len(got) != maxPXPeers {
		t.Fatalf("took %d peers of one exchange, cap %d", len(got), maxPXPeers)
	}
	if _, malformed := learntPeers([]peerAddrs{{ID: []byte("junk")}}, self); !malformed {
		t.Fatal("a malformed peer ID went unnoticed")
	}
}

// FuzzLearntPeers: whatever a directory frame names, the peers taken are
// few, distinct, not self, and dialled at bare addresses only, or at
// exactly /p2p/RELAY/p2p-circuit through another peer (which the dialer's
// policy allows only through admitted anchors).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func FuzzLearntPeers(f *testing.F) {
	self := peer.ID("\x00\x24\x08\x01\x12\x20" + string(make([]byte, 32)))
	id, _ := peer.Decode("12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf")
	seed, _ := detcbor.Marshal(directoryMsg{Peers: []peerAddrs{
		{ID: []byte(id), Addrs: [][]byte{ma.StringCast("/ip4/10.0.0.1/tcp/1").Bytes(), ma.StringCast("/ip4/10.0.0.2/tcp/1/p2p/" + id.String()).Bytes()}},
		{ID: []byte("junk"), Addrs: [][]byte{{0xff}}},
	}})
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		var msg directoryMsg
		if decode(data, &msg, maxDirMsg) != nil || msg.check() != nil {
			return
		}
		got, _ := learntPeers(msg.Peers, self)
		if len(got) > maxPXPeers {
			t.Fatalf("%d peers taken", len(got))
		}
		seen := map[peer.ID]bool{}
		for _, ai := range got {
			if ai.ID == self || seen[ai.ID] || len(ai.Addrs) == 0 || len(ai.Addrs) > maxAddrsPerPeer {
				t.Fatalf("bad target %v", ai)
			}
			seen[ai.ID] = true
			for _, a := range ai.Addrs {
				if r, err := a.ValueForProtocol(ma.P_P2P); err == nil {
					if !a.Equal(discovery.Circuit(must(peer.Decode(r)))) || r == ai.ID.String() {
						t.Fatalf("address %s names a peer", a)
					}
				}
			}
		}
	})
}
