package mesh

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
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
	Recipient(id peer.ID, now time.Time) (e2e.Recipient, error)
	// OnAdmitted registers f to run (in its own goroutine) for every peer
	// admitted from now on.
	OnAdmitted(f func(peer.ID))
	// AwaitAdmitted waits for the admission decision on id.
	AwaitAdmitted(ctx context.Context, id peer.ID) bool
}

// Config configures the mesh service.
type Config struct {
	Node   Node
	Device *chat.Device
	Store  ds.Datastore
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
	// Observe, if set, is told of every envelope this device takes in
	// from the mesh (dup: it held it already), outside any lock — for
	// simulations and metrics. It must not block.
	Observe func(id crdt.OpID, from peer.ID, dup bool)
}

// Topic names.
const (
	convTopicPrefix  = "/medmesh/conv/"
	inboxTopicPrefix = "/medmesh/inbox/"
)

func convTopic(tag []byte) string  { return convTopicPrefix + hex.EncodeToString(tag) }
func inboxTopic(id peer.ID) string { return inboxTopicPrefix + id.String() }

// Errors.
var (
	ErrNoConversation = errors.New("no such conversation")
	ErrUnknownMember  = errors.New("unknown member")
)

type conv struct {
	r   *chat.Replica
	tag []byte
	j   *journal // the replica's writes to the store
}

// Service runs the conversations of one device over the mesh. One mutex
// (mu) guards the conversation table and every replica.
type Service struct {
	cfg    Config
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	convs   map[string]*conv // by hex tag
	byID    map[chat.ConversationID]*conv
	carried map[string]*carrier // anchor: tags held for others
	// carriedBytes and oldestCarried summarise carried, so enforcing quota
	// and TTL on every envelope kept costs nothing until one is exceeded.
	carriedBytes  int64
	oldestCarried time.Time
	tagList       [][]byte // tags(), cached until a conversation or carrier is added
	topics        map[string]*pubsub.Topic
	subs          []*pubsub.Subscription
	events        *broker

	syncing map[peer.ID]bool
	changes uint64             // ops made or taken in (guarded by mu)
	synced  map[peer.ID]uint64 // changes at our last complete sync with a peer
	kicks   chan struct{}
	sent    atomic.Int64 // sync bytes written
}

// SyncBytes is how many bytes of sync frames this device has written.
func (s *Service) SyncBytes() int64 { return s.sent.Load() }

// New starts the service: restores persisted conversations, joins topics
// and starts sync.
func New(cfg Config) (*Service, error) {
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
	if cfg.AnchorQuota == 0 {
		cfg.AnchorQuota = 1 << 30
	}
	if cfg.AnchorTTL == 0 {
		cfg.AnchorTTL = 30 * 24 * time.Hour
	}
	s := &Service{cfg: cfg, log: cfg.Logger, convs: map[string]*conv{}, byID: map[chat.ConversationID]*conv{},
		carried: map[string]*carrier{}, topics: map[string]*pubsub.Topic{}, syncing: map[peer.ID]bool{}, synced: map[peer.ID]uint64{}, events: newBroker(),
		kicks: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.restore(); err != nil {
		s.cancel()
		return nil, err
	}
	if err := s.subscribe(inboxTopic(cfg.Node.ID()), inboxTag(cfg.Node.ID())); err != nil {
		s.cancel()
		return nil, err
	}
	h := cfg.Node.Host()
	h.SetStreamHandler(ProtoSync, s.gate(s.handleSync))
	h.SetStreamHandler(ProtoHeld, s.gate(s.handleHeld))
	cfg.Node.OnAdmitted(func(p peer.ID) { s.goOwned(func() { s.syncWith(p) }) })
	s.goOwned(s.syncLoop)
	return s, nil
}

func (s *Service) goOwned(f func()) {
	select {
	case <-s.ctx.Done():
		return
	default:
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Close stops every goroutine and subscription.
func (s *Service) Close() {
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
	s.events.close()
}

// Store keys.
func convKey(tag []byte) ds.Key { return ds.NewKey("/conv").ChildString(hex.EncodeToString(tag)) }

func (s *Service) opts(tag []byte, j *journal) []chat.Option {
	k := convKey(tag)
	return []chat.Option{
		chat.WithClock(s.cfg.Now),
		chat.WithStore(NewOpStore(j, k.ChildString("op"))),
		chat.WithPlaintexts(plainStore{j, k.ChildString("plain")}),
	}
}

// restore reloads every conversation (and, on an anchor, carried tags).
func (s *Service) restore() error {
	res, err := s.cfg.Store.Query(s.ctx, query.Query{Prefix: "/conv", KeysOnly: true})
	if err != nil {
		return err
	}
	tags := map[string]bool{}
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
		if l := ds.RawKey(r.Key).List(); len(l) == 3 && l[2] == "keys" {
			tags[l[1]] = true
		}
	}
	for t := range tags {
		tag, err := hex.DecodeString(t)
		if err != nil {
			continue
		}
		keys, err := s.cfg.Store.Get(s.ctx, convKey(tag).ChildString("keys"))
		if err != nil {
			return err
		}
		j := newJournal(s.cfg.Store)
		r, err := chat.Restore(s.cfg.Device, s.cfg.Node, keys, s.opts(tag, j)...)
		if err != nil {
			return fmt.Errorf("restore conversation %s: %w", t, err)
		}
		if err := s.adopt(&conv{r: r, tag: tag, j: j}); err != nil {
			return err
		}
	}
	return s.restoreCarried()
}

// adopt registers a conversation and joins its topic.
func (s *Service) adopt(c *conv) error {
	s.mu.Lock()
	s.convs[hex.EncodeToString(c.tag)] = c
	s.tagList = nil
	if !c.r.ID().IsZero() {
		s.byID[c.r.ID()] = c
	}
	s.mu.Unlock()
	return s.subscribe(convTopic(c.tag), c.tag)
}

func (s *Service) conv(id chat.ConversationID) (*conv, error) {
	c := s.byID[id]
	if c == nil {
		return nil, ErrNoConversation
	}
	return c, nil
}

// persist saves a conversation's keys after a change and ends the journal's
// transaction; callers hold mu. It also counts the change, so sync knows
// there is something to offer.
//
// Ops of others are written as they are applied, and their key record with
// no fsync: a crash costs a refetch. Ops this device made since c.j.begin —
// sends, receipts, welcomes — were held back by the journal: they go to the
// store in one batch with the key record (the send chains' next indices), and
// persist returns only once the store has synced it. Until then nothing of
// ours may be published, served to a peer or acknowledged to the API, or a
// restart after SIGKILL or power loss could seal a new message with a chain
// index whose key recipients have already used. mu stays held through the
// sync because sync serves ops from the replicas under mu.
func (s *Service) persist(c *conv) error {
	s.changes++
	keys, err := c.r.Keys()
	if err == nil {
		err = c.j.save(s.ctx, convKey(c.tag), keys)
	} else {
		c.j.end()
	}
	if err != nil {
		s.log.Error("persist conversation", "err", err)
	}
	return err
}

// Create starts a conversation with members (peer IDs), saves it durably
// and publishes it.
func (s *Service) Create(title string, members []peer.ID) (chat.ConversationID, error) {
	id := chat.NewConversationID()
	tag := chat.TagOf(id, s.cfg.Node.ID())
	j := newJournal(s.cfg.Store)
	s.mu.Lock()
	j.begin()
	r, out, err := chat.CreateWithID(id, s.cfg.Device, s.cfg.Node, title, members, s.opts(tag, j)...)
	if err != nil {
		j.end()
		s.mu.Unlock()
		return chat.ConversationID{}, err
	}
	c := &conv{r: r, tag: tag, j: j}
	err = s.persist(c) // before adopt makes it visible to sync
	s.mu.Unlock()
	if err != nil {
		return chat.ConversationID{}, fmt.Errorf("save new conversation: %w", err)
	}
	if err := s.adopt(c); err != nil {
		return chat.ConversationID{}, err
	}
	s.publish(c, out)
	s.events.emit(Event{Type: "conversation", Conversation: id.String()})
	return id, nil
}

// publish sends envelopes on the conversation topic, and welcomes also to
// each holder's inbox.
func (s *Service) publish(c *conv, envs [][]byte) {
	for _, raw := range envs {
		s.pub(convTopic(c.tag), raw)
		e, err := e2e.Decode(raw)
		if err != nil || e.Kind != e2e.KindWelcome {
			continue
		}
		if w, err := e2e.DecodeWelcome(e.Body); err == nil {
			for _, m := range w.Members {
				if id := peer.ID(m); id != s.cfg.Node.ID() {
					s.carryWelcome(id, e, raw)
					s.pub(inboxTopic(id), raw)
				}
			}
		}
	}
	s.kick()
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

// subscribe joins a topic and reads it until Close.
func (s *Service) subscribe(name string, tag []byte) error {
	t, err := s.topic(name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	for _, sub := range s.subs {
		if sub.Topic() == name {
			s.mu.Unlock()
			return nil
		}
	}
	sub, err := t.Subscribe()
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.subs = append(s.subs, sub)
	s.mu.Unlock()
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
				s.handleChecked(e, m.Data, m.ReceivedFrom, tag) // the validator checked it
			} else {
				s.handleFor(m.Data, m.ReceivedFrom, false, tag)
			}
		}
	})
	return nil
}

// validate is the topic validator: no decryption needed.
func (s *Service) validate(_ context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	if from == s.cfg.Node.ID() {
		return pubsub.ValidationAccept
	}
	if !s.cfg.Node.IsAdmitted(from) {
		return pubsub.ValidationReject
	}
	e, err := s.check(m.Data, false)
	if err != nil {
		return pubsub.ValidationReject
	}
	if topic := m.GetTopic(); len(topic) > len(convTopicPrefix) && topic[:len(convTopicPrefix)] == convTopicPrefix {
		if topic != convTopic(e.Tag) {
			return pubsub.ValidationReject
		}
	}
	m.ValidatorData = e // the subscriber applies it without checking again
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
		return fmt.Errorf("sender %s holds no known certificate", sender)
	}
	if revoked && !viaSync {
		return fmt.Errorf("fresh push from revoked sender %s", sender)
	}
	return nil
}

// handleFor takes an envelope from the mesh (a topic, or sync of the
// carrier tag carrierTag: the conversation's, or an inbox's).
func (s *Service) handleFor(raw []byte, from peer.ID, viaSync bool, carrierTag []byte) {
	e, err := s.check(raw, viaSync)
	if err != nil {
		s.log.Debug("envelope refused", "from", from.String(), "err", err)
		return
	}
	s.handleChecked(e, raw, from, carrierTag)
}

// handleChecked takes an envelope that passed check.
func (s *Service) handleChecked(e *e2e.Envelope, raw []byte, from peer.ID, carrierTag []byte) {
	key := hex.EncodeToString(e.Tag)
	s.mu.Lock()
	c := s.convs[key]
	s.mu.Unlock()
	if c == nil && e.Kind == e2e.KindWelcome {
		c = s.join(e)
	}
	if c != nil {
		s.receiveAll(c, []checked{{e, raw}}, from)
	}
	if s.cfg.Anchor && c == nil {
		s.carry(carrierTag, e, raw, from)
	}
}

func (s *Service) convIDOf(tag []byte) chat.ConversationID {
	if c := s.convs[hex.EncodeToString(tag)]; c != nil {
		return c.r.ID()
	}
	return chat.ConversationID{}
}

// join starts a replica for a conversation we have been welcomed into.
func (s *Service) join(e *e2e.Envelope) *conv {
	w, err := e2e.DecodeWelcome(e.Body)
	if err != nil || !slices.ContainsFunc(w.Members, func(m []byte) bool { return peer.ID(m) == s.cfg.Node.ID() }) {
		return nil
	}
	j := newJournal(s.cfg.Store)
	r := chat.Join(s.cfg.Device, s.cfg.Node, e.Tag, s.opts(e.Tag, j)...)
	if err := s.adopt(&conv{r: r, tag: e.Tag, j: j}); err != nil {
		s.log.Warn("join conversation", "err", err)
		return nil
	}
	s.mu.Lock()
	c := s.convs[hex.EncodeToString(e.Tag)]
	s.mu.Unlock()
	// Sync at once: the rest of the conversation should not wait for a tick.
	s.goOwned(func() { s.syncAll(true) })
	return c
}

// checked is an envelope that passed check: decoded and verified once.
type checked struct {
	e   *e2e.Envelope
	raw []byte
}

// receiveAll applies a batch of checked envelopes, then acknowledges and
// persists once for the batch.
func (s *Service) receiveAll(c *conv, envs []checked, from peer.ID) {
	s.mu.Lock()
	applied := 0
	var dups []bool
	for _, ce := range envs {
		err := c.r.ReceiveVerified(ce.e, ce.raw)
		if s.cfg.Observe != nil {
			dups = append(dups, errors.Is(err, crdt.ErrDuplicate))
		}
		if errors.Is(err, crdt.ErrDuplicate) {
			continue
		}
		applied++
		switch {
		case errors.Is(err, chat.ErrNotAuthorised):
			s.log.Debug("op refused", "from", from.String(), "err", err)
		case err != nil:
			s.log.Warn("op not applied cleanly", "from", from.String(), "err", err)
		}
	}
	if applied == 0 {
		s.mu.Unlock()
		s.observe(envs, from, dups)
		return
	}
	if !c.r.ID().IsZero() {
		s.byID[c.r.ID()] = c
	}
	// The ops of others above went to the store as they were applied, with
	// no fsync; receipts (and a welcome they may need) are ours: persist
	// makes them durable, one sync for the batch, before they are published.
	c.j.begin()
	receipts := s.autoReceipts(c)
	saved := s.persist(c) == nil
	id := c.r.ID()
	s.mu.Unlock()
	s.observe(envs, from, dups)
	if len(receipts) > 0 && saved {
		s.publish(c, receipts)
	}
	if !id.IsZero() {
		s.events.emit(Event{Type: "message", Conversation: id.String()})
	}
}

func (s *Service) observe(envs []checked, from peer.ID, dups []bool) {
	for i, ce := range envs {
		if s.cfg.Observe != nil {
			s.cfg.Observe(crdt.OpID(e2e.ID(ce.raw)), from, dups[i])
		}
	}
}

// autoReceipts acknowledges delivery of messages from others: that is the
// "delivered" state their senders see. Callers hold mu.
func (s *Service) autoReceipts(c *conv) [][]byte {
	todo := c.r.Fresh()
	var out [][]byte
	for len(todo) > 0 {
		n := min(len(todo), 1000)
		envs, _, err := c.r.Receipt(chat.Delivered, todo[:n]...)
		if err != nil {
			return out
		}
		out = append(out, envs...)
		todo = todo[n:]
	}
	return out
}

// Summary is a conversation in the list.
type Summary struct {
	ID      string   `json:"id"`
	Title   string   `json:"title"`
	Members []string `json:"members"`
	Admins  []string `json:"admins"`
	Last    string   `json:"last,omitempty"`
	Unread  int      `json:"unread"`
	Urgent  int      `json:"urgent"`
	Queued  int      `json:"queued"` // own messages still only on this device
	// Flags: members this device caught misbehaving (peer ID → reason).
	Flags map[string]string `json:"flags,omitempty"`
}

// IDValue parses the summary's ID.
func (s Summary) IDValue() chat.ConversationID {
	id, _ := chat.ParseConversationID(s.ID)
	return id
}

// Conversations lists the conversations this device is in.
func (s *Service) Conversations() []Summary {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Summary
	for id, c := range s.byID {
		st := c.r.State()
		sum := Summary{ID: id.String(), Title: st.Title, Members: ids(st.Members), Admins: ids(st.Admins)}
		if len(st.Flags) > 0 {
			sum.Flags = make(map[string]string, len(st.Flags))
			for p, why := range st.Flags {
				sum.Flags[p.String()] = why
			}
		}
		for _, m := range st.Messages {
			if m.Withdrawn != "" {
				continue // void: neither unread, nor the last text, nor waiting to go
			}
			if !m.Deleted {
				sum.Last = m.Text
			}
			if m.Sender == s.cfg.Node.ID() && c.r.DeliveryOf(m).State == chat.StateQueued {
				sum.Queued++
			}
			if lvl := m.Receipts[s.cfg.Node.ID()]; m.Sender != s.cfg.Node.ID() && lvl < chat.Read {
				sum.Unread++
				if m.Urgent {
					sum.Urgent++
				}
			}
		}
		out = append(out, sum)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func ids(ps []peer.ID) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// MessageView is a message as the API shows it.
type MessageView struct {
	ID        string              `json:"id"`
	Sender    string              `json:"sender"`
	Text      string              `json:"text"`
	Time      time.Time           `json:"time"`
	Urgent    bool                `json:"urgent"`
	State     string              `json:"state"`
	Recipient map[string]string   `json:"recipients,omitempty"`
	ReplyTo   string              `json:"reply_to,omitempty"`
	Edited    bool                `json:"edited,omitempty"`
	Deleted   bool                `json:"deleted,omitempty"`
	Reactions map[string][]string `json:"reactions,omitempty"`
	Skewed    bool                `json:"clock_skewed,omitempty"`
	Photo     *PhotoView          `json:"photo,omitempty"`
	// Withdrawn: why a message this device showed no longer stands (its
	// text and photo are gone); empty for a standing message.
	Withdrawn string `json:"withdrawn,omitempty"`
}

// PhotoView says a message is a photo; its bytes come from Photo.
type PhotoView struct {
	Size  int64 `json:"size"`
	Ready bool  `json:"ready"` // every chunk has arrived
}

// Messages lists a conversation's messages with delivery states.
func (s *Service) Messages(id chat.ConversationID) ([]MessageView, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.conv(id)
	if err != nil {
		return nil, err
	}
	st := c.r.State()
	out := make([]MessageView, 0, len(st.Messages))
	for _, m := range st.Messages {
		v := MessageView{ID: m.ID.String(), Sender: m.Sender.String(), Text: m.Text, Time: m.Time, Urgent: m.Urgent,
			Edited: m.Edited, Deleted: m.Deleted, Skewed: m.Skewed, Withdrawn: m.Withdrawn}
		if !m.ReplyTo.IsZero() {
			v.ReplyTo = m.ReplyTo.String()
		}
		if m.Photo != nil {
			v.Photo = &PhotoView{Size: m.Photo.Size, Ready: m.Photo.Ready()}
		}
		if len(m.Reactions) > 0 {
			v.Reactions = map[string][]string{}
			for e, who := range m.Reactions {
				v.Reactions[e] = ids(who)
			}
		}
		if m.Sender == s.cfg.Node.ID() {
			// The sender sees the least advanced recipient, and each one.
			d := c.r.DeliveryOf(m)
			v.State, v.Recipient = d.State, map[string]string{}
			for p, st := range d.PerRecipient {
				v.Recipient[p.String()] = st
			}
		} else {
			// A recipient sees how far it has got itself.
			v.State = chat.StateDelivered
			if lvl := m.Receipts[s.cfg.Node.ID()]; lvl >= chat.Read {
				v.State = []string{chat.StateQueued, chat.StateDelivered, chat.StateRead, chat.StateAcknowledged}[lvl]
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// Do runs one replica operation (send, edit, receipt, member change…),
// saves what it produced durably (see persist), then publishes it. If that
// cannot be saved, Do publishes nothing and returns the error, so the caller
// is never told an op was sent that a crash could lose: the op stays in the
// replica (shown queued; sync may still fetch it from memory), and its
// writes are retried with the conversation's next save.
func (s *Service) Do(id chat.ConversationID, op func(r *chat.Replica) ([][]byte, crdt.OpID, error)) (crdt.OpID, error) {
	s.mu.Lock()
	c, err := s.conv(id)
	if err != nil {
		s.mu.Unlock()
		return crdt.OpID{}, err
	}
	c.j.begin()
	out, opID, err := op(c.r)
	perr := s.persist(c)
	s.mu.Unlock()
	if perr != nil {
		if len(out) > 0 {
			s.events.emit(Event{Type: "message", Conversation: id.String()})
		}
		return crdt.OpID{}, fmt.Errorf("save conversation %s: %w", id, perr)
	}
	if len(out) > 0 {
		s.publish(c, out)
		s.events.emit(Event{Type: "message", Conversation: id.String()})
	}
	return opID, err
}

// Photo returns a photo message's thumbnail, or (full) its whole image.
func (s *Service) Photo(id chat.ConversationID, msg crdt.OpID, full bool) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.conv(id)
	if err != nil {
		return nil, err
	}
	if full {
		return c.r.PhotoData(msg)
	}
	for _, m := range c.r.State().Messages {
		if m.ID == msg && m.Photo != nil {
			return m.Photo.Thumb, nil
		}
	}
	return nil, chat.ErrNoSuchMessage
}

// journal is the datastore a conversation's replica writes through (ops,
// plaintexts). Between begin and the next save or end — while this device
// makes ops — it holds writes back, so that save stores them in one batch
// with the conversation's key record and syncs the store once; at other
// times writes go straight to the store. Reads see held-back writes; a
// failed save keeps them for the next. Query sees the store only (replicas
// query when they open, before any transaction). Guarded by Service.mu, as
// the replica is.
type journal struct {
	ds.Datastore
	open    bool
	pending map[ds.Key]heldWrite
}

type heldWrite struct {
	value   []byte
	deleted bool
}

func newJournal(d ds.Datastore) *journal {
	return &journal{Datastore: d, pending: map[ds.Key]heldWrite{}}
}

// begin holds writes back until save or end.
func (j *journal) begin() { j.open = true }

// end stops holding writes back; those held stay for the next save.
func (j *journal) end() { j.open = false }

func (j *journal) Put(ctx context.Context, k ds.Key, v []byte) error {
	if j.open {
		j.pending[k] = heldWrite{value: slices.Clone(v)}
		return nil
	}
	delete(j.pending, k)
	return j.Datastore.Put(ctx, k, v)
}

func (j *journal) Delete(ctx context.Context, k ds.Key) error {
	if j.open {
		j.pending[k] = heldWrite{deleted: true}
		return nil
	}
	delete(j.pending, k)
	return j.Datastore.Delete(ctx, k)
}

func (j *journal) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	if w, ok := j.pending[k]; ok {
		if w.deleted {
			return nil, ds.ErrNotFound
		}
		return slices.Clone(w.value), nil
	}
	return j.Datastore.Get(ctx, k)
}

func (j *journal) Has(ctx context.Context, k ds.Key) (bool, error) {
	if w, ok := j.pending[k]; ok {
		return !w.deleted, nil
	}
	return j.Datastore.Has(ctx, k)
}

func (j *journal) GetSize(ctx context.Context, k ds.Key) (int, error) {
	if w, ok := j.pending[k]; ok {
		if w.deleted {
			return -1, ds.ErrNotFound
		}
		return len(w.value), nil
	}
	return j.Datastore.GetSize(ctx, k)
}

// save ends the transaction and writes the key record of the conversation
// under prefix. With nothing held back (no op of ours) that is a plain put.
// Otherwise the held writes and the key record go in one batch — one
// atomic write on the device's pebble store — and save returns once the
// store has synced it.
func (j *journal) save(ctx context.Context, prefix ds.Key, keys []byte) error {
	j.open = false
	k := prefix.ChildString("keys")
	if len(j.pending) == 0 {
		return j.Datastore.Put(ctx, k, keys)
	}
	if b, ok := j.Datastore.(ds.Batching); ok {
		j.pending[k] = heldWrite{value: keys}
		if err := j.commitBatch(ctx, b); err != nil {
			return err
		}
	} else {
		// No batches: the key record first, so that a store applying
		// writes in order, crashing part-way, leaves the chains ahead of
		// the ops (an index skipped, never one reused).
		if err := j.Datastore.Put(ctx, k, keys); err != nil {
			return err
		}
		for key, w := range j.pending {
			if err := j.apply(ctx, j.Datastore, key, w); err != nil {
				return err
			}
		}
	}
	if err := j.Datastore.Sync(ctx, prefix); err != nil {
		return fmt.Errorf("sync store: %w", err)
	}
	clear(j.pending)
	return nil
}

func (j *journal) commitBatch(ctx context.Context, b ds.Batching) error {
	bt, err := b.Batch(ctx)
	if err != nil {
		return err
	}
	for key, w := range j.pending {
		if err := j.apply(ctx, bt, key, w); err != nil {
			return err
		}
	}
	return bt.Commit(ctx)
}

func (j *journal) apply(ctx context.Context, w ds.Write, k ds.Key, h heldWrite) error {
	if h.deleted {
		return w.Delete(ctx, k)
	}
	return w.Put(ctx, k, h.value)
}
