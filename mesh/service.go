package mesh

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// Node is what the mesh needs from the node it runs on.
type Node interface {
	ID() peer.ID
	Host() host.Host
	PubSub() *pubsub.PubSub
	IsAdmitted(peer.ID) bool
	// KnownStaff reports whether id holds a valid certificate of a trusted
	// CA that this node has seen (admitted or in the directory), and
	// whether it is revoked.
	KnownStaff(id peer.ID) (known, revoked bool)
	// OnAdmitted registers f to run (in its own goroutine) for every peer
	// admitted from now on.
	OnAdmitted(f func(peer.ID))
	// AwaitAdmitted waits for the admission decision on id.
	AwaitAdmitted(ctx context.Context, id peer.ID) bool
	// HasRole reports whether id is admitted now on a certificate that
	// grants role (RoleAnchor: its "held" acknowledgements count).
	HasRole(id peer.ID, role string) bool
	// Penalise counts a message id sent that our validators rejected
	// against it (gossipsub's application score; enough of them and the
	// peer is dropped).
	Penalise(id peer.ID)
}

// Checked is an envelope that passed the mesh's checks: canonical,
// signed, by known staff. Env is its decoding, Raw its bytes.
type Checked struct {
	Env *e2e.Envelope
	Raw []byte
}

// Holder is what the mesh needs from the layer above that holds this
// device's conversations (package conversations implements it). The mesh
// never reads a conversation: it asks the holder which tags it holds and
// which envelopes, and hands it envelopes it has checked.
type Holder interface {
	// Tags lists the conversation tags held.
	Tags() [][]byte
	// IDs is the op-ID set of a held tag (nil when not held).
	IDs(tag []byte) []crdt.OpID
	// Keys gives the causal key (e2e.Envelope.SyncKey) of each of ids,
	// ops of a held tag: 0 for one it does not know (nil: none known).
	Keys(tag []byte, ids []crdt.OpID) []uint64
	// Envelopes returns the envelopes among ids of a held tag, in causal
	// order where known.
	Envelopes(tag []byte, ids []crdt.OpID) [][]byte
	// Has reports whether op id of a held tag was applied (not merely
	// waiting for its dependencies: sync fetches those again, to find
	// what they wait for). It came in these exact bytes, its ID being
	// their hash, and was checked then, so a copy is neither verified nor
	// delivered again. It must not block; a holder may answer for its
	// recent ops only, since false costs only the full check.
	Has(tag []byte, id crdt.OpID) bool
	// Deliver takes checked envelopes of one conversation tag, from peer
	// from. It reports whether the tag is held (or was just joined: a
	// welcome named this device); if not, an anchor carries them.
	Deliver(tag []byte, envs []Checked, from peer.ID) bool
	// Held records that by acknowledged storing ops of a held tag.
	Held(tag []byte, ids []crdt.OpID, by peer.ID)
}

// Config configures the mesh.
type Config struct {
	Node  Node
	Store ds.Datastore // carried envelopes (anchors, welcomes for inboxes)
	// Anchor: keep every valid envelope offered, for any tag (ciphertext).
	Anchor      bool
	AnchorQuota int64         // bytes; default 1 GiB
	AnchorTTL   time.Duration // default 30 days
	Logger      *slog.Logger
	Now         func() time.Time
	// SyncEvery is the anti-entropy period; default 30 s.
	SyncEvery time.Duration
	// KickDelay is how long after publishing the device syncs with its
	// peers (gossip may drop early pushes); default 300 ms.
	KickDelay time.Duration
	// SessionTimeout bounds one sync session (stream reset after it);
	// default 2 min. Simulations shorten it with their clock: a mocknet
	// stream ignores deadlines, and one left half made by a close that
	// raced its opening would hold a site link's conversation (busyTag)
	// for the session's bound.
	SessionTimeout time.Duration
	// Carry: carry sealed envelopes of conversations this device is not
	// in, handed by colleagues (carry.go); ignored on an anchor.
	// CarryQuota (bytes, default 1 MiB), CarryTTL (from the envelope's
	// time, default 7 days), CarryShare (of the quota one origin may fill,
	// default 0.25) bound what it carries; CarryCopies (default 8; 1: none
	// sprayed) is how many copies of each op of ours go out to carriers.
	Carry       bool
	CarryQuota  int64
	CarryTTL    time.Duration
	CarryShare  float64
	CarryCopies int
	// Observe, if set, is told of every envelope an anchor carries (dup:
	// it held it already) and of every copy of a held op dropped unchecked
	// (dup; see Holder.Has), outside any lock. It must not block.
	Observe func(id crdt.OpID, from peer.ID, dup bool)
	// Links, if set, are an anchor's site links (sites.go): sync with
	// them soon after every change, envelope frames paced, no gossip.
	Links Links
	// Federated, FederatedSender and Shares serve devices of federated
	// trusts (federated.go; all three nil: none is served). Federated
	// reports whether p is admitted now as one; FederatedSender whether
	// a device is a federated one met and admitted now, and revoked;
	// Shares whether federated p may sync tag (a conversation it is a
	// current member of). Ignored on an anchor.
	Federated       func(p peer.ID) bool
	FederatedSender func(id peer.ID) (known, revoked bool)
	Shares          func(p peer.ID, tag []byte) bool
	// Introduce, if set, is called before each session with federated
	// peer p with the tags shared with it: it introduces p to their
	// other members (the node's IntroduceTo), so p can take their
	// envelopes. It may block for a stream's exchange.
	Introduce func(p peer.ID, tags [][]byte)
}

// Topic names.
const (
	convTopicPrefix  = "/medmesh/conv/"
	inboxTopicPrefix = "/medmesh/inbox/"
)

func convTopic(tag []byte) string  { return convTopicPrefix + hex.EncodeToString(tag) }
func inboxTopic(id peer.ID) string { return inboxTopicPrefix + id.String() }

// Service moves the envelopes of one device over the mesh. mu guards the
// topic table, the anchor's carried index and the sync records; it is
// never held while calling the holder.
type Service struct {
	cfg    Config
	h      Holder
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	cuts   atomic.Int64 // reconciliations this device ended at MaxRounds (reconcileTag)

	mu      sync.Mutex
	carried map[string]*carrier // anchor: tags held for others
	// carriedBytes and oldestCarried summarise carried, so enforcing quota
	// and TTL on every envelope kept costs nothing until one is exceeded.
	carriedBytes int64
	copies       map[crdt.OpID]int // carriers holding each carried op (guarded by mu)

	lifeMu        sync.Mutex // guards closed; see enter
	closed        bool
	oldestCarried time.Time
	topics        map[string]*pubsub.Topic
	subs          map[string]*pubsub.Subscription
	// adopted counts the carriers an anchor adopted from each offering
	// peer's offers (see maxAdoptPerPeer), adoptedTotal all of them.
	adopted      map[peer.ID]int
	adoptedTotal int
	toAnchors    sentLog // our ops sent to anchors, whose acks count

	syncing map[peer.ID]bool
	fetches inflight      // op IDs being fetched, so two sessions never fetch one op at once
	urgency urgencyLedger // each sender's allowance of urgent treatment (urgent.go)
	// urgentTags: when an urgent envelope last came in for each tag
	// (anchors with site links; guarded by mu; urgent.go).
	urgentTags map[string]time.Time
	// deferred: peers with which a session left to another session ops it
	// needed (see inflight): not recorded as synced, so synced again next
	// round in case that other session fails (guarded by mu).
	deferred map[peer.ID]bool
	rerun    map[peer.ID]bool    // a sync asked for while one with the peer ran
	bases    map[string]*Session // per tag: the last session's items and keys (see session)
	fps      map[string]keptFP   // per tag: the last offer's fingerprint (see fingerprintOf)
	inbound  map[peer.ID]int     // sync sessions each peer runs with us now (see maxInbound)
	kinds    map[peer.ID]*[3]int // of those, how many routine and urgent (classify)
	// joinSync: peers that joined one of our conversation topics, with a
	// sync with them queued (see peerJoined).
	joinSync map[peer.ID]bool
	changes  uint64             // envelopes published or taken in (guarded by mu)
	synced   map[peer.ID]uint64 // changes at our last complete sync with a peer
	// lastTurn: for each peer, the number (from turnSeq) of its last turn
	// (see noteTurn, duePeers).
	lastTurn map[peer.ID]uint64
	turnSeq  uint64
	kicks    chan struct{}
	sent     atomic.Int64            // sync bytes written
	sessions atomic.Int64            // sync sessions opened
	kindSent [fTake + 1]atomic.Int64 // of them, by frame kind (syncstats.go)
	// Carriage (carry.go; guarded by mu): the bag of envelopes carried for
	// others, its bytes, our ops with copies to spray, and the order kept.
	bag      map[string]*bagItem // by handKey(tag, op ID)
	bagBytes int64
	tokens   map[string]*token // by handKey(tag, op ID)
	seq      uint64
	// Site links (sites.go): kicks of a sync with the site peers, and the
	// tags each site peer's sessions are moving now (guarded by mu).
	siteKicks chan struct{}
	busy      map[peer.ID]map[string]int
	// urgentFor: per site peer, the tags an urgent envelope came in for
	// that an urgent session with it is to move now, with those urgent
	// ops (the newest urgentFirst); urgentRun: the site peers with an
	// urgent session running (sites.go, urgentSites).
	urgentFor map[peer.ID]map[string][]crdt.OpID
	urgentRun map[peer.ID]bool
	refused   refusals // anchor: envelopes dropped for room, not fetched again (guarded by mu)
}

// SyncBytes is how many bytes of sync frames this device has written.
func (s *Service) SyncBytes() int64 { return s.sent.Load() }

// SyncSessions reports the sync sessions this device has opened.
func (s *Service) SyncSessions() int64 { return s.sessions.Load() }

// New starts the mesh for holder h: restores carried envelopes, joins the
// topics of the tags h holds and the device's inbox, and starts sync.
func New(cfg Config, h Holder) (*Service, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SyncEvery == 0 {
		cfg.SyncEvery = 30 * time.Second
	}
	if cfg.KickDelay == 0 {
		cfg.KickDelay = kickDelay
	}
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = syncTimeout
	}
	if cfg.AnchorQuota == 0 {
		cfg.AnchorQuota = 1 << 30
	}
	if cfg.AnchorTTL == 0 {
		cfg.AnchorTTL = 30 * 24 * time.Hour
	}
	if cfg.CarryQuota == 0 {
		cfg.CarryQuota = DefaultCarryQuota
	}
	if cfg.CarryTTL == 0 {
		cfg.CarryTTL = DefaultCarryTTL
	}
	if cfg.CarryShare == 0 {
		cfg.CarryShare = DefaultCarryShare
	}
	if cfg.CarryCopies == 0 {
		cfg.CarryCopies = DefaultCarryCopies
	}
	s := &Service{cfg: cfg, h: h, log: cfg.Logger, carried: map[string]*carrier{}, topics: map[string]*pubsub.Topic{},
		subs: map[string]*pubsub.Subscription{}, adopted: map[peer.ID]int{}, syncing: map[peer.ID]bool{}, synced: map[peer.ID]uint64{}, kicks: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.siteKicks = make(chan struct{}, 1)
	fail := func(err error) (*Service, error) {
		s.Close()
		return nil, err
	}
	if err := s.restoreCarried(); err != nil {
		return fail(err)
	}
	if err := s.restoreTokens(); err != nil {
		return fail(err)
	}
	if err := s.subscribe(inboxTopic(cfg.Node.ID()), inboxTag(cfg.Node.ID())); err != nil {
		return fail(err)
	}
	for _, tag := range h.Tags() {
		if err := s.subscribe(convTopic(tag), tag); err != nil {
			return fail(err)
		}
	}
	host := cfg.Node.Host()
	host.SetStreamHandler(ProtoSync, s.gateSync(s.handleSync))
	host.SetStreamHandler(ProtoHeld, s.gate(s.handleHeld))
	cfg.Node.OnAdmitted(func(p peer.ID) { s.goOwned(func() { s.syncWith(p) }) })
	s.goOwned(s.syncLoop)
	if cfg.Links != nil {
		s.goOwned(s.siteLoop)
	}
	return s, nil
}

// enter counts one more goroutine of the service (release with
// s.wg.Done), unless Close has begun: Close sets closed under lifeMu
// before it waits, so no goroutine starts after the wait began.
func (s *Service) enter() bool {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.closed || s.ctx.Err() != nil {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Service) goOwned(f func()) {
	if !s.enter() {
		return
	}
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Close stops every goroutine and subscription; safe to call twice.
func (s *Service) Close() {
	s.lifeMu.Lock()
	s.closed = true
	s.lifeMu.Unlock()
	s.cancel()
	s.mu.Lock()
	for _, sub := range s.subs {
		sub.Cancel()
	}
	s.mu.Unlock()
	h := s.cfg.Node.Host()
	h.RemoveStreamHandler(ProtoSync)
	h.RemoveStreamHandler(ProtoHeld)
	s.wg.Wait()
}

// Publish sends envelopes this device made on the conversation's topic
// (joining it), and the welcomes among them to the inboxes of the devices
// they are sealed to — keeping them for those inboxes too, so sync hands
// them over whenever the devices meet. Then it asks for a sync round soon.
func (s *Service) Publish(tag []byte, envs, welcomes [][]byte, inboxes []peer.ID) {
	s.noteOwn(tag, envs, welcomes, inboxes)
	s.Gossip(tag, envs, welcomes, inboxes)
	s.kick()
}

// Gossip is Publish without the sync round soon after: for delivered and
// read receipts, which every member makes for every message. A kick per
// receipt made a 64-member group run 64 sync rounds with every peer per
// message, each racing gossip to fetch (and verify) the same receipts; a
// receipt gossip drops comes with the next anti-entropy round instead.
func (s *Service) Gossip(tag []byte, envs, welcomes [][]byte, inboxes []peer.ID) {
	if err := s.subscribe(convTopic(tag), tag); err != nil {
		s.log.Warn("join topic", "err", err)
	}
	s.mu.Lock()
	s.changes++
	s.mu.Unlock()
	s.kickSites()
	s.kickFederated(tag)
	s.notePublished(convTopic(tag), envs)
	for _, raw := range envs {
		s.pub(convTopic(tag), raw)
	}
	for _, to := range inboxes {
		for _, raw := range welcomes {
			s.carryWelcome(to, raw)
			s.pub(inboxTopic(to), raw)
		}
	}
}

// kick asks for a sync round soon: gossip can drop a push (a peer's streams
// coming up or going down), and sync is cheap when little differs.
func (s *Service) kick() {
	select {
	case s.kicks <- struct{}{}:
	default:
	}
}

func (s *Service) pub(topic string, raw []byte) {
	t, err := s.topic(topic)
	if err != nil {
		s.log.Warn("join topic", "err", err)
		return
	}
	if err := t.Publish(s.ctx, raw); err != nil && s.ctx.Err() == nil {
		s.log.Debug("publish", "err", err)
	}
}

func (s *Service) topic(name string) (*pubsub.Topic, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.topicLocked(name)
}

func (s *Service) topicLocked(name string) (*pubsub.Topic, error) {
	if t := s.topics[name]; t != nil {
		return t, nil
	}
	ps := s.cfg.Node.PubSub()
	if err := ps.RegisterTopicValidator(name, s.validate); err != nil {
		return nil, err
	}
	t, err := ps.Join(name)
	if err != nil {
		return nil, err
	}
	s.topics[name] = t
	return t, nil
}

// subscribe joins a topic and reads it until Close; tag is the carrier
// tag of what arrives there (the conversation's, or the inbox's).
func (s *Service) subscribe(name string, tag []byte) error {
	if s.ctx.Err() != nil {
		return nil
	}
	s.mu.Lock()
	if s.subs[name] != nil {
		s.mu.Unlock()
		return nil
	}
	t, err := s.topicLocked(name)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	sub, err := t.Subscribe()
	if err != nil {
		s.mu.Unlock()
		return err
	}
	var events *pubsub.TopicEventHandler
	if strings.HasPrefix(name, convTopicPrefix) {
		if events, err = t.EventHandler(); err != nil {
			s.log.Warn("topic events", "err", err)
		}
	}
	s.subs[name] = sub
	s.mu.Unlock()
	if events != nil {
		s.goOwned(func() { s.watchJoins(events) })
	}
	s.goOwned(func() {
		for {
			m, err := sub.Next(s.ctx)
			if err != nil {
				return
			}
			if m.ReceivedFrom == s.cfg.Node.ID() {
				continue
			}
			if e, ok := m.ValidatorData.(*e2e.Envelope); ok {
				s.deliver(tag, []Checked{{e, m.Data}}, m.ReceivedFrom) // the validator checked it
			}
		}
	})
	return nil
}

// watchJoins syncs with every peer that joins a conversation topic of
// ours, until Close. Gossip pushes an op only to the peers a publisher
// knows to be subscribed: what was published between a peer's joining the
// conversation and its subscription reaching the publisher — the first
// messages after a welcome — would otherwise wait for the sync kick or the
// gossip heartbeat. A sync costs what differs, so a joining peer gets what
// it lacks and no more (nothing is pushed blindly), and one queued sync
// per peer covers any number of topics it joins at once.
func (s *Service) watchJoins(h *pubsub.TopicEventHandler) {
	defer h.Cancel()
	for {
		ev, err := h.NextPeerEvent(s.ctx)
		if err != nil {
			return
		}
		if ev.Type == pubsub.PeerJoin && s.cfg.Node.IsAdmitted(ev.Peer) {
			s.peerJoined(ev.Peer)
		}
	}
}

// peerJoined queues one sync with p (at once), unless one is queued.
func (s *Service) peerJoined(p peer.ID) {
	s.mu.Lock()
	queued := s.joinSync[p]
	if s.joinSync == nil {
		s.joinSync = map[peer.ID]bool{}
	}
	s.joinSync[p] = true
	s.mu.Unlock()
	if queued {
		return
	}
	s.goOwned(func() {
		s.mu.Lock()
		delete(s.joinSync, p)
		s.mu.Unlock()
		s.syncRound(p, true)
	})
}

// validate is the topic validator: no decryption needed.
func (s *Service) validate(_ context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	if from == s.cfg.Node.ID() {
		return pubsub.ValidationAccept
	}
	if !s.cfg.Node.IsAdmitted(from) {
		return pubsub.ValidationReject
	}
	// Malformed, forged or misfiled envelopes count against the peer that
	// sent them (gossipsub forwards only what the forwarder validated); an
	// unknown or revoked sender does not — an honest colleague may not yet
	// hold the entry or the CRL we do.
	e, err := e2e.Decode(m.Data)
	if topic := m.GetTopic(); err == nil && len(topic) > len(convTopicPrefix) && topic[:len(convTopicPrefix)] == convTopicPrefix && topic != convTopic(e.Tag) {
		err = errMisfiled
	}
	// A copy of an op we applied (sync brought it first) came in these
	// exact bytes, verified then: forwarded, neither verified nor
	// delivered again.
	id := crdt.OpID(e2e.ID(m.Data))
	known := err == nil && s.known(e.Tag, id)
	if err == nil && !known {
		err = e.Verify()
	}
	if err != nil {
		s.cfg.Node.Penalise(from)
		return pubsub.ValidationReject
	}
	if s.checkSender(e, false) != nil {
		return pubsub.ValidationReject
	}
	if known {
		s.dropped(id, from)
	} else {
		m.ValidatorData = e // the subscriber delivers it without checking again
	}
	return pubsub.ValidationAccept
}

// check validates an envelope without decrypting it: canonical, signed,
// by a known member of staff; a fresh push by a revoked sender is refused
// (viaSync: fetched because others depend on it — allowed).
func (s *Service) check(raw []byte, viaSync bool) (*e2e.Envelope, error) {
	e, err := e2e.Decode(raw)
	if err != nil {
		return nil, err
	}
	if err := e.Verify(); err != nil {
		return nil, err
	}
	return e, s.checkSender(e, viaSync)
}

// checkSender applies the membership-of-staff rules that need no signature
// work: a known certificate; no fresh pushes from a revoked sender.
func (s *Service) checkSender(e *e2e.Envelope, viaSync bool) error {
	sender, err := e.SenderID()
	if err != nil {
		return err
	}
	if sender == s.cfg.Node.ID() {
		return nil
	}
	known, revoked := s.cfg.Node.KnownStaff(sender)
	if !known {
		if known, revoked = s.federatedSender(e, sender, viaSync); !known {
			return fmt.Errorf("sender %s holds no known certificate", sender)
		}
	}
	if revoked && !viaSync {
		return fmt.Errorf("fresh push from revoked sender %s", sender)
	}
	return nil
}

// deliver hands checked envelopes, which arrived under carrier tag
// carrierTag (a conversation's, or an inbox's), to the holder, one
// conversation at a time; on an anchor, what the holder does not hold is
// carried.
func (s *Service) deliver(carrierTag []byte, envs []Checked, from peer.ID) {
	for len(envs) > 0 {
		tag := envs[0].Env.Tag
		n := 1
		for n < len(envs) && bytes.Equal(envs[n].Env.Tag, tag) {
			n++
		}
		batch := envs[:n]
		envs = envs[n:]
		if s.h.Deliver(tag, batch, from) {
			s.mu.Lock()
			s.changes++
			joined := s.subs[convTopic(tag)] == nil
			s.mu.Unlock()
			s.kickSites()
			if joined {
				if err := s.subscribe(convTopic(tag), tag); err != nil {
					s.log.Warn("join topic", "err", err)
				}
				s.absorb(tag) // what we carried of it for others, if anything
				// Sync at once: the rest of the conversation should not wait for a tick
				// (nor for a round already running, as when the welcome came by sync).
				s.goOwned(func() {
					peers, _ := s.connected()
					for _, p := range peers {
						s.goOwned(func() { s.syncRound(p, true) })
					}
				})
			}
			continue
		}
		if s.cfg.Anchor {
			for _, ce := range batch {
				s.carry(carrierTag, ce.Env, ce.Raw, from)
			}
		}
	}
}

// known reports whether op id of tag was applied (see Holder.Has): a
// copy needs no check and no delivery.
func (s *Service) known(tag []byte, id crdt.OpID) bool {
	return s.h != nil && s.h.Has(tag, id)
}

// dropped tells Observe of a copy of an applied op from peer from,
// dropped unchecked.
func (s *Service) dropped(id crdt.OpID, from peer.ID) {
	if s.cfg.Observe != nil {
		s.cfg.Observe(id, from, true)
	}
}

// holds reports whether the holder holds tag (Tags is sorted).
func (s *Service) holds(tag []byte) bool {
	if s.h == nil {
		return false
	}
	_, ok := slices.BinarySearchFunc(s.h.Tags(), tag, bytes.Compare)
	return ok
}
