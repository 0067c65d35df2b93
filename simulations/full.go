package simulations

import (
	"context"
	"crypto/x509"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"
	"github.com/ipfs/go-datastore/query"
	pebbleds "github.com/ipfs/go-ds-pebble"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"google.golang.org/protobuf/proto"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/baseline"
	"github.com/medmesh/medmesh/mesh"
	"github.com/medmesh/medmesh/node"
)

// FullOptions tune the full-stack engine.
type FullOptions struct {
	// Scale is how many scenario seconds pass per wall-clock second
	// (default: the scenario runs in about 30 s). Protocol timers — the
	// anti-entropy period, the sync kick, the gossipsub heartbeat — and
	// link latency shrink by it, bandwidth grows by it. The machine's own
	// costs (signatures, decryption) do not shrink: at scale 1000 one
	// 70 µs op costs 70 ms of scenario time.
	Scale float64
	// Degree caps the connections a device opens when it arrives in a
	// place, as a connection manager does (default 8).
	Degree int
	// Elastic makes the scenario clock yield to the machine: it stands
	// still while an event is applied (events are instants, as in the
	// DES) and never runs past an event the loop has not applied yet, so
	// a machine too busy to keep up stretches the wall time, not the
	// scenario. Tests of the protocol's outcomes use it; the benchmarks
	// (whose question is whether the machine keeps up) run on the strict
	// clock, where a late event counts in the lag.
	Elastic bool
	// Setup bounds the wall time to enrol and found conversations.
	Setup time.Duration
	// Dir is where the devices' stores are made: one fresh pebble
	// database in a new directory under Dir (default: the system's
	// temporary directory), a namespace per device, removed at the end.
	// Stores on disk, as on real devices, keep the heap to what a node
	// holds in memory.
	Dir string
	// ReceiptWindow, if positive, is how long (scenario time) the devices
	// coalesce their delivered and read receipts, in place of the
	// product's conversations.ReceiptWindow: what receipts cost a large
	// group, measured (the benchmarks' MEDMESH_RECEIPT_WINDOW).
	ReceiptWindow time.Duration
}

// full is one full-stack run: real nodes and mesh services on a mocknet.
type full struct {
	w     *World
	opt   FullOptions
	res   *Result
	mn    mocknet.Mocknet
	ca    *identity.CA
	devs  []*fdev
	byID  map[peer.ID]int
	rng   *rand.Rand
	clock clock
	conns map[[2]int]mocknet.Link
	gossp atomic.Int64 // gossip bytes sent (RPC sizes)
	// The WAN between bridges (site.go): its mocknet links, which the
	// bridges' site links dial, and the conversation gossip messages one
	// bridge sent another (none: gossip does not cross a site link).
	wanLinks  map[[2]int]mocknet.Link
	wanGossip atomic.Int64
	db        *pebbleds.Datastore
	tmp       string // the database's directory, removed on close

	mu      sync.Mutex
	links   []SiteLinkChange // what the bridges' site links did (watchSites)
	got     []map[crdt.OpID]arrival
	dups    map[crdt.OpID]int
	crlSeen [][]float64 // per revocation, per device: when it knew (-1)
	maxLag  float64     // scenario seconds
	lagBy   [LagParts]float64
	sends   []chan int // per device: messages to write, in order (see send)
	sendWG  sync.WaitGroup
}

type fdev struct {
	d     *device.Device
	n     *node.Node
	s     *conversations.Service
	m     *mesh.Service
	store ds.Datastore
	cert  *x509.Certificate
	trust *identity.Trust
	place int
	conv  chat.ConversationID
}

// checkFull refuses what the full engine cannot run: it runs the protocol
// as built, so routing medmesh (members and anchors carry: the devices
// with carriage turned off) or medmesh-carry (the devices as shipped:
// spray with mesh's defaults; other carry settings are the DES's).
func (s Scenario) checkFull() error {
	for _, g := range s.Devices {
		if g.Bridge && !g.Anchor {
			return fmt.Errorf("scenario %s: group %s: a bridge runs a site link, which only an anchor keeps: set anchor too", s.Name, g.Name)
		}
	}
	switch s.Routing {
	case "", "medmesh":
		return nil
	case "medmesh-carry":
		c, dev := s.Carry.withDefaults(), (Carry{Policy: "spray", Copies: mesh.DefaultCarryCopies,
			QuotaKiB: mesh.DefaultCarryQuota / 1024, TTLSeconds: mesh.DefaultCarryTTL.Seconds(), OriginShare: mesh.DefaultCarryShare}).withDefaults()
		if c != dev {
			return fmt.Errorf("scenario %s: the full engine carries as the devices do (spray, %d copies, %d KiB, %.0f s, share %.2f); other carry settings are modelled in the DES only: use --engine des",
				s.Name, dev.Copies, dev.QuotaKiB, dev.TTLSeconds, dev.OriginShare)
		}
		return nil
	}
	return fmt.Errorf("scenario %s: routing %s is modelled in the DES only (the full engine runs the protocol as built: medmesh, or medmesh-carry); use --engine des", s.Name, s.Routing)
}

// RunFull runs a scenario on real libp2p nodes over a mocknet.
func RunFull(s Scenario, seed uint64, opt FullOptions, progress func(done, total int)) (*Result, error) {
	w, err := Build(s, seed)
	if err != nil {
		return nil, err
	}
	return w.RunFull(opt, progress)
}

// now is the scenario time.
func (f *full) now() float64 { return f.clock.now() }

// clock is the scenario clock: the wall clock compressed by scale from an
// anchor (scenario time at, wall time wall). The strict clock keeps its
// anchor at time 0 and runs on whatever the machine does. The elastic one
// (FullOptions.Elastic) stands still while an event is applied, then runs
// on from the event's time, up to the next event's time (limit) at most.
type clock struct {
	mu     sync.Mutex
	scale  float64
	at     float64
	wall   time.Time
	limit  float64
	frozen bool
}

func (c *clock) start(scale float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scale, c.at, c.wall, c.limit, c.frozen = scale, 0, time.Now(), math.Inf(1), false
}

func (c *clock) now() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frozen {
		return c.at
	}
	return min(c.at+time.Since(c.wall).Seconds()*c.scale, c.limit)
}

// wallOf is when scenario time t comes on the wall clock.
func (c *clock) wallOf(t float64) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wall.Add(time.Duration((t - c.at) / c.scale * float64(time.Second)))
}

// hold stops the elastic clock at t, the time of the event about to be
// applied (the clock stands at t already: it stopped there, or got there
// on time).
func (c *clock) hold(t float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at, c.frozen = t, true
}

// resume runs the elastic clock on from t, now, up to limit.
func (c *clock) resume(t, limit float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at, c.wall, c.limit, c.frozen = t, time.Now(), limit, false
}

// RunFull runs the world on real nodes, on the wall clock compressed by
// opt.Scale.
func (w *World) RunFull(opt FullOptions, progress func(done, total int)) (*Result, error) {
	if err := w.S.checkFull(); err != nil {
		return nil, err
	}
	start := time.Now()
	if opt.Scale <= 0 {
		opt.Scale = max(1, w.S.Hours*3600/30)
	}
	if opt.Degree <= 0 {
		opt.Degree = 8
	}
	if opt.Setup <= 0 {
		opt.Setup = 2 * time.Minute
	}
	if os.Getenv("GOGC") == "" {
		// Every device's heap is in this one process, and a device's
		// garbage is collected against the live heap of all of them: at
		// the default GOGC the collector took a quarter of the CPU of a
		// 72-device run (a phone collects against its own heap alone).
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	f := &full{w: w, opt: opt, res: newResult(w, "full"), mn: mocknet.New(), byID: map[peer.ID]int{},
		rng: rand.New(rand.NewPCG(w.Seed, 0x66756c6c)), conns: map[[2]int]mocknet.Link{}, wanLinks: map[[2]int]mocknet.Link{}, dups: map[crdt.OpID]int{}}
	f.clock.start(opt.Scale)
	f.res.TimeScale = opt.Scale
	f.mn.SetLinkDefaults(mocknet.LinkOptions{
		Latency:   time.Duration(w.S.LinkMS / opt.Scale * float64(time.Millisecond)),
		Bandwidth: w.S.LinkBytesPerSecond() * opt.Scale,
	})
	defer f.close()
	if err := f.startNodes(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opt.Setup)
	defer cancel()
	if err := f.foundConversations(ctx); err != nil {
		return nil, err
	}
	f.run(progress)
	f.finish()
	f.res.Wall = time.Since(start)
	return f.res, nil
}

func (f *full) close() {
	for _, d := range f.devs {
		if d.d != nil {
			d.d.Close()
		}
	}
	f.mn.Close()
	if f.db != nil {
		f.db.Close()
	}
	if f.tmp != "" {
		os.RemoveAll(f.tmp)
	}
}

// openStores opens the database the devices' stores live in.
func (f *full) openStores() error {
	dir, err := os.MkdirTemp(f.opt.Dir, "medmesh-sim-")
	if err != nil {
		return fmt.Errorf("device stores: %w", err)
	}
	f.tmp = dir
	// One block cache for every device's store: a real device caches its
	// own few megabytes; 256 MiB (off the Go heap) does so for hundreds.
	// No write-ahead log and 64 MiB memtables: the run is thrown away, so
	// it needs no crash recovery, and with every device writing to one
	// database each WAL rotation (every 4 MiB by default) held up all of
	// them — a 64-member group's devices waited seconds on each other to
	// save a receipt (a device's own store has only its own writes).
	db, err := pebbleds.NewDatastore(dir, pebbleds.WithCacheSize(256<<20),
		pebbleds.WithPebbleOpts(&pebble.Options{DisableWAL: true, MemTableSize: 64 << 20}))
	if err != nil {
		return fmt.Errorf("device stores: %w", err)
	}
	f.db = db
	return nil
}

// unsynced is the simulation's shared database without fsync: Sync (the
// product's "durable before published" step) is a no-op. A real device
// fsyncs its own disk; here every device's store shares one write-ahead
// log on one disk, so each device's fsync would queue behind every other
// device's — a cost of sharing the machine, not of the protocol (a
// simulated device never crashes). Writes still go to the database on
// disk, so the heap holds what a node holds.
type unsynced struct{ *pebbleds.Datastore }

func (unsynced) Sync(context.Context, ds.Key) error { return nil }

// tracer counts the bytes of every gossip RPC a node sends, and a
// bridge's conversation gossip messages to another bridge (wan).
type tracer struct {
	n   *atomic.Int64
	wan func(to peer.ID) bool // nil: not a bridge
	msg *atomic.Int64
}

func (t tracer) SendRPC(rpc *pubsub.RPC, to peer.ID) {
	t.n.Add(int64(proto.Size(&rpc.RPC)))
	if t.wan == nil || !t.wan(to) {
		return
	}
	for _, m := range rpc.GetPublish() {
		if m.GetTopic() != node.TrustTopic {
			t.msg.Add(1)
		}
	}
}

func (tracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (tracer) OnClosedOutboundStream(peer.ID)                       {}
func (tracer) Join(string)                                          {}
func (tracer) Leave(string)                                         {}
func (tracer) Graft(peer.ID, string)                                {}
func (tracer) Prune(peer.ID, string)                                {}
func (tracer) ValidateMessage(*pubsub.Message)                      {}
func (tracer) DeliverMessage(*pubsub.Message)                       {}
func (tracer) RejectMessage(*pubsub.Message, string)                {}
func (tracer) DuplicateMessage(*pubsub.Message)                     {}
func (tracer) ThrottlePeer(peer.ID)                                 {}
func (tracer) RecvRPC(*pubsub.RPC)                                  {}
func (tracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (tracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (tracer) UndeliverableMessage(*pubsub.Message)                 {}

// startNodes enrols every device with a throwaway CA and starts a node and
// a mesh service for it on the mocknet.
func (f *full) startNodes() error {
	now := time.Now()
	ca, err := identity.NewRootCA("Simulated Trust", now)
	if err != nil {
		return err
	}
	f.ca = ca
	if err := f.openStores(); err != nil {
		return err
	}
	params := pubsub.DefaultGossipSubParams()
	params.HeartbeatInterval = max(10*time.Millisecond, time.Duration(float64(time.Second)/f.opt.Scale))
	params.HeartbeatInitialDelay = min(params.HeartbeatInitialDelay, params.HeartbeatInterval)
	f.got = make([]map[crdt.OpID]arrival, len(f.w.Devices))
	keys, bridges, err := f.bridgeKeys()
	if err != nil {
		return err
	}
	for i, wd := range f.w.Devices {
		k := keys[i]
		if k == nil {
			if k, err = identity.GenerateDeviceKey(); err != nil {
				return err
			}
		}
		csrPEM, _ := identity.CreateCSR(k, identity.Details{Name: wd.Name, StaffID: wd.Name})
		req, err := identity.ParseCSR(csrPEM)
		if err != nil {
			return err
		}
		var roles []string
		if wd.Anchor {
			roles = []string{mesh.RoleAnchor} // its "held" acknowledgements count
		}
		cert, err := ca.Sign(req, identity.SignOptions{Roles: roles}, now)
		if err != nil {
			return err
		}
		bundle, err := ca.Bundle(cert)
		if err != nil {
			return err
		}
		chain, err := identity.ParseCertificates(bundle)
		if err != nil {
			return err
		}
		priv, err := crypto.UnmarshalEd25519PrivateKey(k.Identity)
		if err != nil {
			return err
		}
		h, err := f.mn.AddPeer(priv, deviceAddr(i))
		if err != nil {
			return err
		}
		trust, err := identity.NewTrust([]*x509.Certificate{ca.Cert}) // each device its own: CRLs are learnt one by one
		if err != nil {
			return err
		}
		store := namespace.Wrap(unsynced{f.db}, ds.NewKey(fmt.Sprintf("/device/%d", i)))
		// AdmitTimeout: generous, so that a machine running behind the
		// compressed clock does not refuse (and block) honest peers.
		opts := []device.Option{device.WithIdentity(k, chain, trust), device.WithStore(store), device.WithHost(h), device.WithAdmitTimeout(time.Minute),
			device.WithPubSubOptions(pubsub.WithGossipSubParams(params), pubsub.WithRawTracer(f.tracer(i, bridges))),
			device.WithTimers(time.Duration(f.w.S.SyncSeconds/f.opt.Scale*float64(time.Second)), time.Duration(0.3/f.opt.Scale*float64(time.Second))),
			device.WithReceiptWindow(f.receiptWindow()),
			device.WithObserve(f.observer(i)), device.WithCarry(f.w.S.Routing == "medmesh-carry")}
		if wd.Anchor {
			opts = append(opts, device.WithAnchor(0, 0))
		}
		if wd.Bridge {
			opts = append(opts, f.siteOptions(i, bridges)...)
		}
		dv, err := device.Open(context.Background(), "", nil, opts...)
		if err != nil {
			return err
		}
		d := &fdev{d: dv, n: dv.Node(), s: dv.Conversations(), m: dv.Mesh(), store: store, cert: cert, place: nowhere, trust: trust}
		f.devs = append(f.devs, d)
		f.byID[d.n.ID()] = i
		f.got[i] = map[crdt.OpID]arrival{}
	}
	return nil
}

// receiptWindow is the devices' receipt window in wall time: the
// product's (or FullOptions.ReceiptWindow) shrunk by the scale.
func (f *full) receiptWindow() time.Duration {
	w := conversations.ReceiptWindow
	if f.opt.ReceiptWindow > 0 {
		w = f.opt.ReceiptWindow
	}
	return max(time.Millisecond, time.Duration(w.Seconds()/f.opt.Scale*float64(time.Second)))
}

// observer records what device i takes in.
func (f *full) observer(i int) func(id crdt.OpID, from peer.ID, dup bool) {
	return func(id crdt.OpID, from peer.ID, dup bool) {
		t := f.now()
		f.mu.Lock()
		defer f.mu.Unlock()
		if dup {
			f.dups[id]++
			return
		}
		if _, ok := f.got[i][id]; ok {
			return
		}
		hops := int32(1)
		if j, ok := f.byID[from]; ok {
			hops = f.got[j][id].hops + 1
		}
		f.got[i][id] = arrival{at: t, hops: hops}
	}
}

// connect links and connects devices a and b (idempotent).
func (f *full) connect(a, b int) {
	k := [2]int{min(a, b), max(a, b)}
	if _, ok := f.conns[k]; ok || a == b {
		return
	}
	l, err := f.mn.LinkPeers(f.devs[a].n.ID(), f.devs[b].n.ID())
	if err != nil {
		return
	}
	f.conns[k] = l
	f.mn.ConnectPeers(f.devs[a].n.ID(), f.devs[b].n.ID())
}

func (f *full) disconnect(a, b int) {
	k := [2]int{min(a, b), max(a, b)}
	l, ok := f.conns[k]
	if !ok {
		return
	}
	delete(f.conns, k)
	f.mn.Unlink(l)
	f.mn.DisconnectPeers(f.devs[a].n.ID(), f.devs[b].n.ID())
}

// foundConversations: each conversation's first member meets the others
// (off the clock), creates it, and waits until every member has joined.
func (f *full) foundConversations(ctx context.Context) error {
	for c, members := range f.w.Convs {
		creator := members[0]
		for _, m := range members[1:] {
			f.connect(creator, m)
		}
		cd := f.devs[creator]
		var ids []peer.ID
		for _, m := range members[1:] {
			id := f.devs[m].n.ID()
			if err := waitFor(ctx, func() bool { _, err := cd.n.Recipient(id, time.Now()); return err == nil }); err != nil {
				return fmt.Errorf("conversation %d: %s never learnt %s's prekey: %w", c, f.w.Devices[creator].Name, f.w.Devices[m].Name, err)
			}
			ids = append(ids, id)
		}
		conv, err := cd.s.Create(fmt.Sprintf("team %d", c), ids)
		if err != nil {
			return fmt.Errorf("conversation %d: %w", c, err)
		}
		for _, m := range members {
			f.devs[m].conv = conv
			s := f.devs[m].s
			// Joined means: the member's own view lists every member —
			// a welcome alone does not let it write yet.
			if err := waitFor(ctx, func() bool {
				for _, sum := range s.Conversations() {
					if sum.ID == conv {
						return len(sum.Members) == len(members)
					}
				}
				return false
			}); err != nil {
				return fmt.Errorf("conversation %d: %s never joined: %w", c, f.w.Devices[m].Name, err)
			}
		}
		for _, m := range members[1:] {
			f.disconnect(creator, m)
		}
	}
	// Off the clock: welcomes and receipts are not messages.
	f.mu.Lock()
	for i := range f.got {
		f.got[i] = map[crdt.OpID]arrival{}
	}
	f.dups = map[crdt.OpID]int{}
	f.mu.Unlock()
	return nil
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

type fevent struct {
	at   float64
	kind int
	a, b int
}

const eCut = 100

// run plays the world's events on the wall clock.
func (f *full) run(progress func(done, total int)) {
	var evs []fevent
	for i, d := range f.w.Devices {
		for _, m := range d.Moves {
			evs = append(evs, fevent{m.At, eMove, i, m.Place})
		}
	}
	for _, l := range f.w.Links {
		evs = append(evs, fevent{l.Up, eUp, l.A, l.B}, fevent{l.Down, eDown, l.A, l.B})
	}
	for i, m := range f.w.Sends {
		evs = append(evs, fevent{m.At, eSend, i, 0})
	}
	for i, r := range f.w.Revokes {
		evs = append(evs, fevent{r.At, eRevoke, i, 0})
	}
	for _, c := range f.w.Cuts {
		evs = append(evs, fevent{c.From, eCut, 0, 0}, fevent{c.To, eHeal, 0, 0})
	}
	evs = append(evs, fevent{f.w.S.Hours * 3600, -1, 0, 0})
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at < evs[j].at })
	f.crlSeen = make([][]float64, len(f.w.Revokes))
	for r := range f.crlSeen {
		f.crlSeen[r] = make([]float64, len(f.devs))
		for i := range f.crlSeen[r] {
			f.crlSeen[r][i] = -1
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if len(f.w.Revokes) > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); f.watchCRLs(ctx) }()
	}
	// Where everyone starts, off the clock: the first connections (and
	// their admissions and directory exchanges) are made before time 0,
	// as a mesh that has been running would have them.
	for i, d := range f.w.Devices {
		f.arrive(i, d.Start)
	}
	f.wan(0)
	f.settle()
	f.settleSites()
	f.clock.start(f.opt.Scale)
	if f.opt.Elastic && len(evs) > 0 {
		f.clock.resume(0, evs[0].at)
	}
	if f.sited() {
		wg.Add(1)
		go func() { defer wg.Done(); f.watchSites(ctx) }()
	}
	cpu0 := baseline.CPUTime()
	f.startSenders()
	timer := time.NewTimer(0)
	for i, e := range evs {
		if d := time.Until(f.clock.wallOf(e.at)); d > 0 {
			timer.Reset(d)
			<-timer.C
		}
		if f.opt.Elastic {
			f.clock.hold(e.at)
		} else {
			f.late(e.at)
		}
		f.step(e)
		if f.opt.Elastic {
			next := math.Inf(1)
			if i+1 < len(evs) {
				next = evs[i+1].at
			}
			f.clock.resume(e.at, next)
		}
		if progress != nil && i%64 == 0 {
			progress(i, len(evs))
		}
	}
	f.stopSenders()
	f.res.cpu = baseline.CPUTime() - cpu0
	stop()
	wg.Wait()
	f.res.Events = len(evs) - 1
}

// settle waits (up to the setup bound) until every connection made is
// admitted both ways.
func (f *full) settle() {
	ctx, cancel := context.WithTimeout(context.Background(), f.opt.Setup)
	defer cancel()
	err := waitFor(ctx, func() bool {
		for k := range f.conns {
			a, b := f.devs[k[0]].n, f.devs[k[1]].n
			if a.Host().Network().Connectedness(b.ID()) == network.Connected && (!a.IsAdmitted(b.ID()) || !b.IsAdmitted(a.ID())) {
				return false
			}
		}
		return true
	})
	if err != nil {
		f.res.Failures = append(f.res.Failures, "start: connections not all admitted before time 0")
	}
}

func (f *full) step(e fevent) {
	switch e.kind {
	case eMove:
		f.leave(e.a)
		f.arrive(e.a, e.b)
	case eUp:
		f.connect(e.a, e.b)
	case eDown:
		f.disconnect(e.a, e.b)
	case eSend:
		f.sends[f.w.Sends[e.a].Dev] <- e.a
	case eRevoke:
		f.revoke(e.a)
	case eCut, eHeal:
		f.wan(f.now())
	}
}

// startSenders starts one writer per device that sends: it writes that
// device's messages in order, off the event loop, so that a device busy
// taking in a batch (its conversation is locked meanwhile) delays its own
// message — which the message's latency, measured from the scheduled time,
// shows — but not every other device's events. A send that finishes late
// counts in the lag like any late event.
func (f *full) startSenders() {
	f.res.sentIDs = make([]crdt.OpID, len(f.w.Sends))
	f.sends = make([]chan int, len(f.devs))
	for _, m := range f.w.Sends {
		if f.sends[m.Dev] != nil {
			continue
		}
		q := make(chan int, len(f.w.Sends))
		f.sends[m.Dev] = q
		f.sendWG.Add(1)
		go func() {
			defer f.sendWG.Done()
			for i := range q {
				f.send(i)
			}
		}()
	}
}

// stopSenders waits until every message handed to a writer is written.
func (f *full) stopSenders() {
	for _, q := range f.sends {
		if q != nil {
			close(q)
		}
	}
	f.sendWG.Wait()
}

// send writes message i on its device.
func (f *full) send(i int) {
	m := f.w.Sends[i]
	d := f.devs[m.Dev]
	at := f.now()
	id, err := d.s.Send(d.conv, fmt.Sprintf("simulated message %d", i), chat.SendOptions{})
	f.late(m.At)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.res.Failures = append(f.res.Failures, fmt.Sprintf("message %d from %s: %v", i, f.w.Devices[m.Dev].Name, err))
		return
	}
	f.got[m.Dev][id] = arrival{at: at}
	f.res.sentIDs[i] = id
}

// late counts in the lag how far the clock is past t, when what was due
// at t has been done: in the whole run's and in that of the part of the
// run t falls in.
func (f *full) late(t float64) {
	d := f.now() - t
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maxLag = max(f.maxLag, d)
	i := lagPart(t, f.w.S.Hours*3600)
	f.lagBy[i] = max(f.lagBy[i], d)
}

// lagPart is the part of a run of total scenario seconds that time t is in
// (0 to LagParts-1; the end belongs to the last part).
func lagPart(t, total float64) int {
	if total <= 0 || t <= 0 {
		return 0
	}
	return min(LagParts-1, int(t/total*LagParts))
}

// fail records what the engine could not do.
func (f *full) fail(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.res.Failures = append(f.res.Failures, fmt.Sprintf(format, args...))
}

// leave drops every place connection of device a (trace links and the
// WAN stay).
func (f *full) leave(a int) {
	p := f.devs[a].place
	if p == nowhere {
		return
	}
	for o, d := range f.devs {
		if o != a && d.place == p {
			f.disconnect(a, o)
		}
	}
	f.devs[a].place = nowhere
}

// arrive connects device a with up to Degree devices present at p:
// anchors and devices it shares a conversation with first (a real device
// on the LAN connects to everyone it discovers, up to its connection
// manager's limit of 256; the simulation keeps only the connections that
// carry a's traffic, then random others), in random order.
func (f *full) arrive(a, p int) {
	f.devs[a].place = p
	if p == nowhere {
		return
	}
	var near, others []int
	conv := f.w.ConvOf[a]
	for o, d := range f.devs {
		switch {
		case o == a || d.place != p:
		case f.w.Devices[o].Anchor || (conv >= 0 && f.w.ConvOf[o] == conv):
			near = append(near, o)
		default:
			others = append(others, o)
		}
	}
	f.rng.Shuffle(len(near), func(i, j int) { near[i], near[j] = near[j], near[i] })
	f.rng.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	here := append(near, others...)
	for _, o := range here[:min(len(here), f.opt.Degree)] {
		f.connect(a, o)
	}
}

// revoke: the CA revokes the device's certificate and the CRL is handed
// to every anchor outside a cut.
func (f *full) revoke(r int) {
	rv := f.w.Revokes[r]
	var entries []x509.RevocationListEntry
	for _, o := range f.w.Revokes[:r+1] {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: f.devs[o.Dev].cert.SerialNumber, RevocationTime: time.Now()})
	}
	crl, err := f.ca.CreateCRL(big.NewInt(int64(r+1)), entries, time.Now())
	if err != nil {
		f.fail("revocation %d: CRL: %v", r, err)
		return
	}
	for i, d := range f.w.Devices {
		if d.Anchor && f.w.wanUp(f.devs[i].place, rv.At) {
			if _, err := f.devs[i].n.SubmitCRL(context.Background(), crl); err != nil {
				f.fail("revocation %d: anchor %s: %v", r, d.Name, err)
			}
		}
	}
}

// watchCRLs notes when each device knows each revocation.
func (f *full) watchCRLs(ctx context.Context) {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := f.now()
		for r, rv := range f.w.Revokes {
			if now < rv.At {
				continue
			}
			for i, d := range f.devs {
				if f.crlSeen[r][i] >= 0 || i == rv.Dev {
					continue
				}
				if d.trust.NewestCRLNumber() > int64(r) {
					f.crlSeen[r][i] = now
				}
			}
		}
	}
}

func (f *full) finish() {
	msgOf := map[crdt.OpID]int32{}
	for i, id := range f.res.sentIDs {
		msgOf[id] = int32(i)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, g := range f.got {
		for id, a := range g {
			if a.hops > 0 {
				f.res.delivered++ // taken in from a peer (a device's own sends have hops 0)
			}
			if _, ok := msgOf[id]; ok && a.hops > 0 {
				f.res.Relayed++
			}
		}
	}
	for id, n := range f.dups {
		if _, ok := msgOf[id]; ok {
			f.res.Duplicates += n
		}
	}
	var sync int64
	f.res.SyncByFrame = map[string]int64{"gossip": f.gossp.Load()}
	for _, d := range f.devs {
		sync += d.m.SyncBytes()
		f.res.sessions += d.m.SyncSessions()
		for k, n := range d.m.SyncBytesByFrame() {
			f.res.SyncByFrame[k] += n
		}
	}
	f.res.Bytes = sync + f.gossp.Load()
	if f.sited() {
		f.res.SiteLinks, f.res.SiteBytes, f.res.WANGossip = f.links, f.siteBytes(), f.wanGossip.Load()
	}
	deps := make([][]int32, len(f.w.Sends)) // standing is read from a converged replica below
	f.w.outcome(f.res, func(dev int, key int32) (arrival, bool) {
		if key < 0 {
			r := int(-1 - key)
			if dev == f.w.Revokes[r].Dev {
				return arrival{}, false
			}
			if t := f.crlSeen[r][dev]; t >= 0 {
				return arrival{at: t}, true
			}
			return arrival{}, false
		}
		a, ok := f.got[dev][f.res.sentIDs[key]]
		return a, ok
	}, deps)
	for r := range f.res.Revocations {
		f.res.Revocations[r].Standing = f.standing(f.w.Revokes[r].Dev)
	}
	for i, d := range f.devs {
		f.res.Storage[f.w.Devices[i].Name] = storeBytes(d.store)
	}
	f.res.Lag = max(0, f.maxLag)
	f.res.LagBy = make([]float64, LagParts)
	for i, d := range f.lagBy {
		f.res.LagBy[i] = max(0, d)
	}
}

// standing counts the revoked device's messages that stand at the end —
// read from the replicas' own views (the chat rule, run by the product),
// which must agree on every member that holds the conversation.
func (f *full) standing(dev int) int {
	c := f.w.ConvOf[dev]
	if c < 0 {
		return 0
	}
	name := f.devs[dev].n.ID()
	n := -1
	for _, m := range f.w.Convs[c] {
		if m == dev {
			continue
		}
		views, err := f.devs[m].s.Messages(f.devs[m].conv)
		if err != nil {
			continue
		}
		k := 0
		for _, v := range views {
			if v.Sender == name && v.Withdrawn == "" {
				k++
			}
		}
		if n >= 0 && k != n {
			f.res.Failures = append(f.res.Failures, fmt.Sprintf("revoked %s: %s shows %d of its messages standing, another member %d",
				f.w.Devices[dev].Name, f.w.Devices[m].Name, k, n))
		}
		n = max(n, k)
	}
	return max(n, 0)
}

func storeBytes(d ds.Datastore) int64 {
	r, err := d.Query(context.Background(), query.Query{})
	if err != nil {
		return 0
	}
	defer r.Close()
	var n int64
	for e := range r.Next() {
		n += int64(len(e.Key) + len(e.Value))
	}
	return n
}
