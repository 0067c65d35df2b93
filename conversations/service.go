package conversations

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/patient"
)

// Publisher sends what this device made: envelopes on the conversation's
// topic (joining it), and welcomes also to the inboxes of the devices they
// are sealed to. The mesh implements it.
type Publisher interface {
	Publish(tag []byte, envs, welcomes [][]byte, inboxes []peer.ID)
	// Gossip is Publish for delivered and read receipts, which every
	// member makes for every message: it asks for no sync round soon
	// after, so what gossip drops waits for anti-entropy.
	Gossip(tag []byte, envs, welcomes [][]byte, inboxes []peer.ID)
}

// Config configures the conversation service.
type Config struct {
	Device    *chat.Device
	Directory chat.Directory
	Store     ds.Datastore
	Logger    *slog.Logger
	Now       func() time.Time
	// Revoked, if set, is the revocation predicate every replica applies
	// (the revoked-sender rule); Revoke re-applies it after a new CRL.
	Revoked func(peer.ID) bool
	// Observe, if set, is told of every envelope taken in from the mesh
	// (dup: it was held already), outside any lock. It must not block.
	Observe func(id crdt.OpID, from peer.ID, dup bool)
	// ReceiptWindow is how long delivered and read receipts are
	// coalesced (0: the package's ReceiptWindow; negative: none — each
	// batch, each read, makes its receipt at once).
	ReceiptWindow time.Duration
	// Audit, if set, is told of events for the audit trail (see audit.go);
	// it must not block (it may be called with a conversation's lock held).
	Audit func([]audit.Event)
	// Foreign, if set, reports whether a peer is a device of another
	// (federated) trust — or not known as our own staff: it is never made
	// an admin (federated.go). It must not rest on memory a restart loses.
	// Invites reports whether a device of another trust may invite ours
	// into a conversation it creates (its trust's federation record says
	// so); nil: never.
	Invites func(peer.ID) bool
	Foreign func(peer.ID) bool
}

// Errors.
var (
	ErrNoConversation = errors.New("no such conversation")
)

// conv is one conversation: its replica and the journal it writes
// through, both guarded by mu.
type conv struct {
	mu  sync.Mutex
	r   *chat.Replica
	tag []byte
	j   *journal
	// joined: made on a welcome before it opened (counted in
	// Service.unopened, and under joinedBy, the welcome's sender, in
	// Service.unopenedBy, until it does).
	joined   bool
	joinedBy peer.ID
	rc       receipts // receipt windows (receipts.go)
	recent   recent   // ops applied recently, for the mesh's Has (own lock)
	// unaudited: ops of ours whose save failed, recorded in the audit
	// trail as sent by the save that persists them (see persist).
	unaudited []crdt.OpID
}

// Service holds the conversations of one device. mu guards the tables
// only; each conversation has its own lock, so a slow rekey or store sync
// in one conversation does not stall the others. Lock order: a
// conversation's mu, then Service.mu — never the other way.
type Service struct {
	cfg    Config
	log    *slog.Logger
	events *broker

	pubMu sync.Mutex
	pub   Publisher // set by Attach

	mu         sync.RWMutex
	convs      map[string]*conv // by hex tag
	byID       map[chat.ConversationID]*conv
	tagList    [][]byte        // Tags(), cached until a conversation is added
	unopened   int             // conversations joined whose welcome has not opened
	unopenedBy map[peer.ID]int // of those, per welcome sender
	// joins: when this device joined a conversation on each sender's
	// welcome, within JoinWindow (see MaxJoinsPerSender).
	joins map[peer.ID][]time.Time

	closed atomic.Bool    // Close began: no receipt window opens
	timers sync.WaitGroup // receipt windows open or firing

	esc escalations // the escalation loop (escalate.go)
}

// Open restores the persisted conversations of a device; nothing is sent
// until Attach gives it a publisher.
func Open(cfg Config) (*Service, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, log: cfg.Logger, events: newBroker(), convs: map[string]*conv{}, byID: map[chat.ConversationID]*conv{}}
	if err := s.restore(); err != nil {
		return nil, err
	}
	return s, nil
}

// Attach sets where new ops are published. Ops made before it (receipts
// of ops taken in while the mesh starts) are stored and reach peers by
// sync.
func (s *Service) Attach(p Publisher) {
	s.pubMu.Lock()
	s.pub = p
	s.pubMu.Unlock()
}

// Close stops the receipt windows (waiting for one that is firing) and
// ends every event subscription.
func (s *Service) Close() {
	s.stopEscalations()
	s.stopWindows()
	s.events.close()
}

// Store keys.
func convKey(tag []byte) ds.Key { return ds.NewKey("/conv").ChildString(hex.EncodeToString(tag)) }

func (s *Service) opts(tag []byte, j *journal) []chat.Option {
	k := convKey(tag)
	o := []chat.Option{
		chat.WithClock(s.cfg.Now),
		chat.WithStore(NewOpStore(j, k.ChildString("op"))),
		chat.WithPlaintexts(plainStore{j, k.ChildString("plain")}),
	}
	if s.cfg.Audit != nil {
		o = append(o, chat.WithAppliedLog())
	}
	return o
}

// restore reloads every conversation.
func (s *Service) restore() error {
	ctx := context.Background()
	res, err := s.cfg.Store.Query(ctx, query.Query{Prefix: "/conv", KeysOnly: true})
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
		keys, err := s.cfg.Store.Get(ctx, convKey(tag).ChildString("keys"))
		if err != nil {
			return err
		}
		j := newJournal(s.cfg.Store)
		r, err := chat.Restore(s.cfg.Device, s.cfg.Directory, keys, s.opts(tag, j)...)
		if err != nil {
			// One conversation that does not restore must not keep the
			// device from starting: its data stays in the store, untouched.
			s.log.Error("restore conversation: left aside", "tag", t, "err", err)
			continue
		}
		s.adopt(&conv{r: r, tag: tag, j: j})
	}
	return nil
}

// adopt registers a conversation, applying the revocation predicate.
func (s *Service) adopt(c *conv) {
	if s.cfg.Revoked != nil {
		c.r.SetRevoked(s.cfg.Revoked)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.convs[hex.EncodeToString(c.tag)] = c
	s.tagList = nil
	if !c.r.ID().IsZero() {
		s.byID[c.r.ID()] = c
	}
}

func (s *Service) byTag(tag []byte) *conv {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.convs[hex.EncodeToString(tag)]
}

func (s *Service) conv(id chat.ConversationID) (*conv, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if c := s.byID[id]; c != nil {
		return c, nil
	}
	return nil, ErrNoConversation
}

// all lists every conversation.
func (s *Service) all() []*conv {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*conv, 0, len(s.convs))
	for _, c := range s.convs {
		out = append(out, c)
	}
	return out
}

// persist saves a conversation's keys after a change and ends the journal's
// transaction; callers hold c.mu.
//
// Ops of others a batch applied (held by c.j.hold) go to the store in one
// batch with their key record, with no fsync: a crash costs a refetch. Ops
// this device made since c.j.begin — sends, receipts, welcomes — were held
// back by the journal: they go to the store in one batch with the key
// record (the send chains' next indices) and whatever of others' is held,
// and persist returns only once the store has synced it. Until then nothing of
// ours may be published, served to a peer or acknowledged to the API, or a
// restart after SIGKILL or power loss could seal a new message with a chain
// index whose key recipients have already used. c.mu stays held through the
// sync because sync serves ops from the replica under c.mu.
func (s *Service) persist(c *conv) error {
	if c.r.ID().IsZero() {
		// Joined on a welcome that has not opened yet (its history is on
		// its way, or it was never sealed to us): nothing of ours to keep,
		// and no key record a restart could restore. Ops taken in are in
		// the store; sync brings them again if need be.
		c.j.end()
		return nil
	}
	keys, err := c.r.Keys()
	if err == nil {
		err = c.j.save(context.Background(), convKey(c.tag), keys)
	} else {
		c.j.end()
	}
	if err != nil {
		s.log.Error("persist conversation", "err", err)
		return err
	}
	if len(c.unaudited) > 0 {
		// Saved now: they reach the trail (the hook never blocks).
		s.record(s.auditOps(c, c.unaudited, true, nil)...)
		c.unaudited = nil
	}
	return nil
}

// Create starts a conversation with members (peer IDs), saves it durably
// and publishes it.
func (s *Service) Create(title string, members []peer.ID) (chat.ConversationID, error) {
	return s.CreateAbout(title, members, nil)
}

// CreateAbout is Create for a conversation about a patient (nil: none).
// The patient goes in an encrypted patient op made with the conversation:
// both are saved and published together, or neither.
func (s *Service) CreateAbout(title string, members []peer.ID, p *patient.Patient) (chat.ConversationID, error) {
	return s.create(title, members, p, nil)
}

func (s *Service) create(title string, members []peer.ID, p *patient.Patient, link *chat.RoleLink) (chat.ConversationID, error) {
	if p != nil {
		if err := p.Validate(); err != nil {
			return chat.ConversationID{}, fmt.Errorf("%w: %w", chat.ErrInvalidPayload, err)
		}
	}
	id := chat.NewConversationID()
	tag := chat.TagOf(id, s.cfg.Device.ID)
	j := newJournal(s.cfg.Store)
	j.begin()
	r, out, err := chat.CreateWithID(id, s.cfg.Device, s.cfg.Directory, title, members, s.opts(tag, j)...)
	if err == nil && p != nil {
		var po chat.Out
		po, err = r.SetPatient(p)
		out.Merge(po)
	}
	if err == nil && link != nil {
		var lo chat.Out
		lo, err = r.SetRole(link)
		out.Merge(lo)
	}
	if err != nil {
		j.end()
		return chat.ConversationID{}, err
	}
	c := &conv{r: r, tag: tag, j: j}
	if err := s.persist(c); err != nil { // before adopt makes it visible to sync
		return chat.ConversationID{}, fmt.Errorf("save new conversation: %w", err)
	}
	s.adopt(c)
	s.publish(c, out)
	s.events.emit(Event{Kind: EventConversation, Conversation: id})
	if s.cfg.Audit != nil {
		s.record(audit.Event{Kind: audit.Created, IDs: audit.IDs{Conversation: id.String()}})
	}
	return id, nil
}

// publish hands what a command produced to the mesh: the conversation
// topic, and each welcome's recipients' inboxes.
func (s *Service) publish(c *conv, out chat.Out) {
	if p := s.publisher(); p != nil && len(out.Envelopes) > 0 {
		p.Publish(c.tag, out.Envelopes, out.Welcomes, out.Inboxes)
	}
}

// publishReceipts is publish for automatic receipts (Publisher.Gossip),
// unless a welcome came with them (a new sending epoch): that one others
// need before anything of ours opens, so it goes as publish does.
func (s *Service) publishReceipts(c *conv, out chat.Out) {
	if len(out.Welcomes) > 0 {
		s.publish(c, out)
		return
	}
	if p := s.publisher(); p != nil && len(out.Envelopes) > 0 {
		p.Gossip(c.tag, out.Envelopes, out.Welcomes, out.Inboxes)
	}
}

func (s *Service) publisher() Publisher {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	return s.pub
}

// do runs one replica operation (send, edit, receipt, member change…),
// saves what it produced durably (see persist), then publishes it. If that
// cannot be saved, do publishes nothing and returns the error, so the caller
// is never told an op was sent that a crash could lose: the op stays in the
// replica (shown queued; sync may still fetch it from memory), and its
// writes are retried with the conversation's next save.
func (s *Service) do(id chat.ConversationID, op func(r *chat.Replica) (chat.Out, error)) (crdt.OpID, error) {
	c, err := s.conv(id)
	if err != nil {
		return crdt.OpID{}, err
	}
	c.mu.Lock()
	c.j.begin()
	out, err := op(c.r)
	opID := out.ID
	perr := s.persist(c)
	var evs []audit.Event
	switch {
	case perr == nil && len(out.Envelopes) > 0:
		evs = s.auditOps(c, opIDs(out.Envelopes), true, nil)
	case perr != nil && len(out.Envelopes) > 0 && s.cfg.Audit != nil:
		c.unaudited = append(c.unaudited, opIDs(out.Envelopes)...) // recorded by the save that persists them
	}
	c.mu.Unlock()
	ev := Event{Kind: EventMessage, Conversation: id}
	if !opID.IsZero() {
		ev.Ops = []crdt.OpID{opID}
	}
	if perr != nil {
		if len(out.Envelopes) > 0 {
			s.events.emit(ev)
		}
		return crdt.OpID{}, fmt.Errorf("save conversation %s: %w", id, perr)
	}
	if len(out.Envelopes) > 0 {
		s.publish(c, out)
		s.events.emit(ev)
	}
	s.record(evs...)
	return opID, err
}

// Typed commands: each makes one op in conversation id (a welcome first
// when a new key epoch is due), saves it durably and publishes it.

// Send posts a text message.
func (s *Service) Send(id chat.ConversationID, text string, o chat.SendOptions) (crdt.OpID, error) {
	// An urgent message says so in its signed header (chat): carriers and
	// anchors move it first without being told.
	return s.do(id, func(r *chat.Replica) (chat.Out, error) { return r.Send(text, o) })
}

// SendPhoto posts a photo (already stripped of metadata) with its
// thumbnail and a caption.
func (s *Service) SendPhoto(id chat.ConversationID, image, thumb []byte, caption string) (crdt.OpID, error) {
	return s.do(id, func(r *chat.Replica) (chat.Out, error) { return r.SendPhoto(image, thumb, caption) })
}

// Edit replaces the text of one of this device's messages.
func (s *Service) Edit(id chat.ConversationID, msg crdt.OpID, text string) error {
	_, err := s.do(id, func(r *chat.Replica) (chat.Out, error) { return r.Edit(msg, text) })
	return err
}

// Delete deletes one of this device's messages for everyone.
func (s *Service) Delete(id chat.ConversationID, msg crdt.OpID) error {
	_, err := s.do(id, func(r *chat.Replica) (chat.Out, error) { return r.Delete(msg) })
	return err
}

// React adds (on) or takes back this device's reaction to a message.
func (s *Service) React(id chat.ConversationID, msg crdt.OpID, emoji string, on bool) error {
	_, err := s.do(id, func(r *chat.Replica) (chat.Out, error) {
		if on {
			return r.React(msg, emoji)
		}
		return r.Unreact(msg, emoji)
	})
	return err
}

// Receipt records that this device's user reached level (chat.Read,
// chat.Acknowledged) on msgs. A read receipt covers the messages and their
// causal past (chat.Replica.Receipt); reads reported while the read window
// is open go in the one receipt made at its end (see ReceiptWindow).
// Acknowledgements are made at once, one per call.
func (s *Service) Receipt(id chat.ConversationID, level int, msgs ...crdt.OpID) error {
	c, err := s.conv(id)
	if err != nil {
		return err
	}
	if s.cfg.Audit != nil && (level == chat.Read || level == chat.Acknowledged) && len(msgs) > 0 {
		kind := audit.Read
		if level == chat.Acknowledged {
			kind = audit.Acknowledged
		}
		defer func() {
			if err == nil {
				s.record(chunked(kind, id, "", opStrings(msgs))...)
			}
		}()
	}
	if level == chat.Read {
		c.mu.Lock()
		if c.rc.open[window(chat.Read)] != nil {
			c.rc.reads = append(c.rc.reads, msgs...)
			if n := len(c.rc.reads); n > maxReads {
				c.rc.reads = c.rc.reads[n-maxReads:]
			}
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()
	}
	_, err = s.do(id, func(r *chat.Replica) (chat.Out, error) {
		out, err := r.Receipt(level, msgs...)
		if level == chat.Read && len(out.Envelopes) > 0 {
			s.openWindow(c, chat.Read) // do holds c.mu
		}
		return out, err
	})
	return err
}

// maxReads bounds the reads held for the end of a window (the latest
// count: a read receipt covers their past).
const maxReads = 1024

// Add makes a colleague a member (admins only).
func (s *Service) Add(id chat.ConversationID, member peer.ID) error {
	_, err := s.do(id, func(r *chat.Replica) (chat.Out, error) { return r.Add(member) })
	return err
}

// Remove removes a member (admins only), starting a new key epoch.
func (s *Service) Remove(id chat.ConversationID, member peer.ID) error {
	_, err := s.do(id, func(r *chat.Replica) (chat.Out, error) { return r.Remove(member) })
	return err
}

// Promote makes a member an admin (admins only).
func (s *Service) Promote(id chat.ConversationID, member peer.ID) error {
	if s.foreign(member) {
		return ErrForeignAdmin
	}
	_, err := s.do(id, func(r *chat.Replica) (chat.Out, error) { return r.Promote(member) })
	return err
}

// Leave takes this device out of a conversation.
func (s *Service) Leave(id chat.ConversationID) error {
	_, err := s.do(id, func(r *chat.Replica) (chat.Out, error) { return r.Leave() })
	return err
}

// SetRetention sets how long messages are kept (admins only; 0: forever).
func (s *Service) SetRetention(id chat.ConversationID, d time.Duration) error {
	_, err := s.do(id, func(r *chat.Replica) (chat.Out, error) { return r.SetRetention(d) })
	return err
}

// SetPatient sets, corrects (p) or clears (nil) who a conversation is
// about; any member may. It returns the patient op's ID.
func (s *Service) SetPatient(id chat.ConversationID, p *patient.Patient) (crdt.OpID, error) {
	return s.do(id, func(r *chat.Replica) (chat.Out, error) { return r.SetPatient(p) })
}

// Summary is a conversation in the list.
type Summary struct {
	ID      chat.ConversationID
	Title   string
	Members []peer.ID
	Admins  []peer.ID
	Last    string // text of the last standing message
	Unread  int
	Urgent  int                // unread and urgent
	Queued  int                // own messages still only on this device
	Flags   map[peer.ID]string // members this device caught misbehaving
	// Patient: who the conversation is about (nil: nobody), and the
	// member who set it last.
	Patient   *patient.Patient
	PatientBy peer.ID
	// Role: the on-call role the conversation was addressed to (nil: none).
	Role *chat.RoleLink
}

// Conversations lists the conversations this device is in, by ID.
func (s *Service) Conversations() []Summary {
	s.mu.RLock()
	cs := make([]*conv, 0, len(s.byID))
	for _, c := range s.byID {
		cs = append(cs, c)
	}
	s.mu.RUnlock()
	out := make([]Summary, 0, len(cs))
	for _, c := range cs {
		if sum, ok := s.summary(c); ok {
			out = append(out, sum)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID.String() < out[j].ID.String() })
	return out
}

// Conversation is one conversation's summary, as Conversations lists it.
func (s *Service) Conversation(id chat.ConversationID) (Summary, error) {
	c, err := s.conv(id)
	if err != nil {
		return Summary{}, err
	}
	sum, ok := s.summary(c)
	if !ok {
		return Summary{}, ErrNoConversation
	}
	return sum, nil
}

// summary summarises c; false if its first ops have not arrived yet.
func (s *Service) summary(c *conv) (Summary, bool) {
	self := s.cfg.Device.ID
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.r.State()
	if len(st.Members) == 0 {
		return Summary{}, false // welcomed, but the conversation's first ops are still on their way
	}
	sum := Summary{ID: st.ID, Title: st.Title, Members: st.Members, Admins: st.Admins, Flags: st.Flags,
		Patient: st.Patient, PatientBy: st.PatientBy, Role: st.Role}
	if sum.ID.IsZero() {
		sum.ID = c.r.ID()
	}
	for _, m := range st.Messages {
		if m.Withdrawn != "" {
			continue // void: neither unread, nor the last text, nor waiting to go
		}
		if !m.Deleted {
			sum.Last = m.Text
		}
		if m.Sender == self && c.r.DeliveryOf(m).State == chat.StateQueued {
			sum.Queued++
		}
		if lvl := m.Receipts[self]; m.Sender != self && lvl < chat.Read {
			sum.Unread++
			if m.Urgent {
				sum.Urgent++
			}
		}
	}
	return sum, true
}

// Message is a message with its delivery state as this device sees it:
// for its sender, the least advanced recipient and each recipient's state;
// for a recipient, how far it has got itself.
type Message struct {
	chat.Message
	State        string
	PerRecipient map[peer.ID]string // own messages only
	// Escalation: where an urgent message stands (escalate.go:
	// EscalationWaiting, …); empty for others.
	Escalation string
}

// Messages lists a conversation's messages with delivery states.
func (s *Service) Messages(id chat.ConversationID) ([]Message, error) {
	c, err := s.conv(id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	self := s.cfg.Device.ID
	now := s.cfg.Now()
	st := c.r.State()
	out := make([]Message, 0, len(st.Messages))
	for _, m := range st.Messages {
		v := Message{Message: m}
		if m.Sender == self {
			d := c.r.DeliveryOf(m)
			v.State, v.PerRecipient = d.State, d.PerRecipient
		} else {
			v.State = chat.StateDelivered
			if lvl := m.Receipts[self]; lvl >= chat.Read {
				v.State = []string{chat.StateQueued, chat.StateDelivered, chat.StateRead, chat.StateAcknowledged}[lvl]
			}
		}
		v.Escalation = s.escalationState(&m, now)
		out = append(out, v)
	}
	return out, nil
}

// State is a conversation's materialised state (a copy the caller owns
// is not made: do not modify it).
func (s *Service) State(id chat.ConversationID) (*chat.State, error) {
	c, err := s.conv(id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.r.State(), nil
}

// Photo returns a photo message's thumbnail, or (full) its whole image.
func (s *Service) Photo(id chat.ConversationID, msg crdt.OpID, full bool) ([]byte, error) {
	c, err := s.conv(id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if full {
		data, err := c.r.PhotoData(msg)
		if err == nil && s.cfg.Audit != nil {
			// The hook must not block, so recording under c.mu is safe.
			s.record(audit.Event{Kind: audit.PhotoViewed, IDs: audit.IDs{Conversation: id.String(), Ops: []string{msg.String()}}})
		}
		return data, err
	}
	for _, m := range c.r.State().Messages {
		if m.ID == msg && m.Photo != nil {
			return m.Photo.Thumb, nil
		}
	}
	return nil, chat.ErrNoSuchMessage
}

// KeyState says how much key material a conversation keeps: the epochs
// this device can still open and the skipped message keys it holds.
func (s *Service) KeyState(id chat.ConversationID) (epochs, skipped int, err error) {
	c, err := s.conv(id)
	if err != nil {
		return 0, 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	epochs, skipped = c.r.KeyState()
	return epochs, skipped, nil
}
