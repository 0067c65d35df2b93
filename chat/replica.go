package chat

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/hpke"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// Device is this device's key material as chat needs it.
type Device struct {
	Key     ed25519.PrivateKey
	ID      peer.ID
	Prekeys *e2e.PrekeyRing
	CertKEM hpke.PrivateKey // last-resort KEM key of the certificate
}

// Directory finds where to seal a welcome for a member: its current signed
// prekey, or its certificate's KEM key as a last resort.
type Directory interface {
	Recipient(id peer.ID, now time.Time) (e2e.Recipient, error)
}

// ConversationID names a conversation (random).
type ConversationID [16]byte

func (c ConversationID) String() string { return hex.EncodeToString(c[:]) }

// IsZero reports whether c is unset.
func (c ConversationID) IsZero() bool { return c == ConversationID{} }

// MarshalText implements encoding.TextMarshaler.
func (c ConversationID) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// ParseConversationID parses the hex form.
func ParseConversationID(s string) (ConversationID, error) {
	var c ConversationID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(c) {
		return c, fmt.Errorf("bad conversation ID %q", s)
	}
	copy(c[:], b)
	return c, nil
}

// opInfo is what a replica knows of one applied op.
type opInfo struct {
	env    *e2e.Envelope // nil for stubs and ops retention deleted
	raw    []byte
	sender peer.ID
	epoch  e2e.EpochID // content and control: the welcome named; a welcome: its own op ID
	depth  uint32      // longest path to a root
	kind   uint8       // payload kind, kindWelcome; 0: not readable by this device
	p      *payload    // nil if unreadable or destroyed
	before *view       // causal past
	view   *view       // causal past and the op itself
	valid  bool        // authorised, not void, not equivocal, standing
	reason error
	gone   bool  // retention deleted it
	stub   bool  // kept without its body: refused, but an op depends on it
	shown  bool  // a message this device showed: if it turns invalid, it is withdrawn
	ord    int32 // position in the order State last walked (scratch for receipts)
	// welcome: who holds the epoch, its control key's commitment, and
	// whether this device opened it
	holders   []peer.ID
	ctlCommit []byte
	opened    bool
}

// chainKey names one sender's chain in one epoch.
type chainKey struct {
	epoch  e2e.EpochID
	sender peer.ID
}

// chain holds the content ops of one chain by index: a second op in a
// slot is equivocation. One small map per chain, not one entry per op in
// a map keyed by the whole slot (the size of a conversation's op count).
type chain struct {
	slots map[uint32]crdt.OpID // the first op seen in each slot
	top   uint32               // the highest index seen
}

// Replica is one device's copy of a conversation.
type Replica struct {
	// expiredUnread: own messages retention deleted before anyone read
	// them, with their times (State shows them to the sender).
	expiredUnread map[crdt.OpID]time.Time
	// urgentSeen: an urgent message or an escalation has been read on
	// this replica (MayEscalate).
	urgentSeen bool

	dev     *Device
	dir     Directory
	conv    ConversationID
	creator peer.ID
	tag     []byte
	now     func() time.Time

	dag   *crdt.DAG
	clock *crdt.Clock
	recv  *e2e.RecvChains
	send  map[e2e.EpochID]*e2e.SendChain
	// control keys: of each epoch this device opened, and those handed on
	// as history that matched their welcome's control-key commitment.
	control    map[e2e.EpochID]e2e.Secret
	superseded map[e2e.EpochID]time.Time // when an epoch we hold stopped being in use
	dropped    map[e2e.EpochID]bool      // epochs whose keys expired: never opened again
	ops        map[crdt.OpID]*opInfo
	revoked    func(peer.ID) bool
	held       map[crdt.OpID]map[peer.ID]bool
	plain      Plaintexts
	openErr    error       // from WithStore
	fresh      []crdt.OpID // messages from others applied since Fresh was last called
	plainErr   error       // a plaintext could not be persisted while applying
	restoring  bool        // Restore is replaying persisted ops
	logApplied bool        // WithAppliedLog: list applied ops of others in applied
	applied    []crdt.OpID // ops of others applied since TakeApplied

	// Authorisation state (auth.go).
	gen       uint64                  // bumped on every rebuild: membership caches
	empty     *view                   // the view of no ops
	effective map[peer.ID][]crdt.OpID // effective removals of each member
	chains    map[chainKey]*chain     // content ops by chain slot
	equivocal map[crdt.OpID]bool
	stubs     map[peer.ID]int // stubs kept per sender
	nStubs    int
	blind     bool // a control op of an authorised epoch is unreadable here (see noteBlind)
	flags     map[peer.ID]string
	roots     []crdt.OpID                          // welcomes with no deps (the first by the creator is the root)
	deleted   map[crdt.OpID]bool                   // targets of deletes their author authorised
	ancestors map[crdt.OpID]map[crdt.OpID]struct{} // of effective removals, per rebuild

	isEffective map[crdt.OpID]bool

	rebuild bool // keys, removals or revocations changed: recompute everything
	// hidden: some op of a revoked sender does not stand (no unrevoked
	// member's op depends on it yet); a new op may change that.
	hidden bool
	dirty  bool // keys, removals or equivocation changed: refresh before judging the next op
	cache  *State
	kids   map[crdt.OpID][]crdt.OpID // children index, rebuilt on demand
	heads  *membership               // membership at the heads, until the next apply

	// early: the earliest time an escalation refused as stamped ahead of
	// this device's clock may stand; State judges everything again then.
	early time.Time

	// Set while one of our own ops is applied: its decoded envelope and
	// payload, so we do not decode and decrypt what we just built.
	ownPayload *payload
	ownPlain   []byte                      // its encoding, as sealed
	senders    map[string]peer.ID          // see senderOf
	decoded    map[crdt.OpID]*e2e.Envelope // envelopes decoded by Receive, until applied
	refused    []error                     // refusals during the current Add
	// excepted: messages our cumulative receipts listed as held but
	// unreadable (receipts.go), in memory only.
	excepted       map[crdt.OpID]bool
	exceptedLoaded bool // excepted rebuilt from our receipts (loadExcepted)
}

// Option configures a replica.
type Option func(*Replica)

// WithClock sets the physical clock (tests, simulations).
func WithClock(now func() time.Time) Option { return func(r *Replica) { r.now = now } }

// WithStore keeps ops in s instead of memory.
func WithStore(s crdt.Store) Option {
	return func(r *Replica) { r.dag, r.openErr = crdt.NewDAG(s) }
}

func newReplica(dev *Device, dir Directory, opts ...Option) *Replica {
	r := &Replica{
		dev: dev, dir: dir, now: time.Now, recv: e2e.NewRecvChains(),
		send: map[e2e.EpochID]*e2e.SendChain{}, control: map[e2e.EpochID]e2e.Secret{},
		superseded: map[e2e.EpochID]time.Time{}, dropped: map[e2e.EpochID]bool{},
		ops: map[crdt.OpID]*opInfo{}, held: map[crdt.OpID]map[peer.ID]bool{},
		empty:     &view{set: map[crdt.OpID]struct{}{}},
		effective: map[peer.ID][]crdt.OpID{}, chains: map[chainKey]*chain{}, senders: map[string]peer.ID{},
		equivocal: map[crdt.OpID]bool{}, stubs: map[peer.ID]int{}, flags: map[peer.ID]string{}, deleted: map[crdt.OpID]bool{},
	}
	for _, o := range opts {
		o(r)
	}
	if r.dag == nil {
		r.dag = crdt.NewMemDAG()
	}
	r.dag.Admit, r.dag.OnApply = r.admit, r.onApply
	r.clock = crdt.NewClock(r.now)
	return r
}

// Create starts a conversation with a title and members (this device is
// the creator and first admin). It returns the replica and the envelopes to
// publish: the root welcome and the create op.
func Create(dev *Device, dir Directory, title string, members []peer.ID, opts ...Option) (*Replica, Out, error) {
	var id ConversationID
	rand.Read(id[:])
	return CreateWithID(id, dev, dir, title, members, opts...)
}

// NewConversationID makes a random conversation ID; TagOf gives the tag a
// conversation created with it by creator will have (to place its store).
func NewConversationID() ConversationID {
	var id ConversationID
	rand.Read(id[:])
	return id
}

// TagOf is the tag of conversation id created by creator.
func TagOf(id ConversationID, creator peer.ID) []byte { return e2e.Tag(id[:], creator) }

// CreateWithID is Create with a chosen (random) conversation ID.
func CreateWithID(id ConversationID, dev *Device, dir Directory, title string, members []peer.ID, opts ...Option) (*Replica, Out, error) {
	if len(title) > maxTitle {
		return nil, Out{}, fmt.Errorf("%w: title", ErrTooLarge)
	}
	r := newReplica(dev, dir, opts...)
	r.conv = id
	r.creator = dev.ID
	r.tag = e2e.Tag(r.conv[:], r.creator)
	all := uniq(append([]peer.ID{dev.ID}, members...))
	welcome, err := r.rekey(all, false)
	if err != nil {
		return nil, Out{}, err
	}
	p := &payload{Kind: kindCreate, Text: title}
	for _, m := range all {
		p.Members = append(p.Members, []byte(m))
	}
	create, err := r.emit(p)
	if err != nil {
		return nil, Out{}, err
	}
	var out Out
	out.welcome(welcome, all, dev.ID)
	out.add(create)
	return r, out, nil
}

// Join makes an empty replica for a conversation this device has been (or
// will be) welcomed into, known only by its tag. It fills as envelopes
// arrive.
func Join(dev *Device, dir Directory, tag []byte, opts ...Option) *Replica {
	r := newReplica(dev, dir, opts...)
	r.tag = bytes.Clone(tag)
	return r
}

// ID is the conversation ID (zero until a welcome has been opened).
func (r *Replica) ID() ConversationID { return r.conv }

// Tag is the conversation's opaque tag (its topic).
func (r *Replica) Tag() []byte { return r.tag }

// SetRevoked installs the revocation predicate (from the newest CRLs).
func (r *Replica) SetRevoked(revoked func(peer.ID) bool) {
	r.revoked = revoked
	r.rebuild = true
	r.cache, r.heads = nil, nil
}

// MarkHeld records that another node (an anchor) acknowledged storing op.
func (r *Replica) MarkHeld(op crdt.OpID, by peer.ID) {
	if info := r.ops[op]; info == nil || info.sender != r.dev.ID {
		return // only our own ops' storage is worth knowing, and only ops we hold
	}
	if r.held[op] == nil {
		r.held[op] = map[peer.ID]bool{}
	}
	r.held[op][by] = true
	r.cache = nil
}

// Receive takes an envelope from the mesh. It returns ErrDuplicate for a
// known op; an op whose dependencies are missing waits (see Missing).
// Rejections of the ops it applied (unauthorised, unreadable payload,
// refused) are joined into the error; the ops stay in the DAG unless
// refused.
func (r *Replica) Receive(raw []byte) error {
	// A known op has these exact bytes (its ID is their hash), already
	// decoded and verified: duplicates are common in a mesh and cost
	// neither a decode nor a signature.
	id := crdt.OpID(e2e.ID(raw))
	if r.dag.Has(id) || r.dag.Pending(id) {
		return crdt.ErrDuplicate
	}
	e, err := e2e.Decode(raw)
	if err != nil {
		return err
	}
	if err := e.Verify(); err != nil {
		return err
	}
	if !bytes.Equal(e.Tag, r.tag) {
		return ErrWrongConversation
	}
	return r.ingestID(e, raw, id)
}

// Has reports whether the replica applied op id (one waiting for its
// dependencies is not applied). It came in these exact bytes (its ID is
// their hash) and was decoded and verified then: a copy arriving again
// needs neither.
func (r *Replica) Has(id crdt.OpID) bool { return r.dag.Has(id) }

// ReceiveVerified is Receive for an envelope the caller has already
// decoded and whose signature it has verified (the mesh validator does):
// signatures are verified once, never twice.
func (r *Replica) ReceiveVerified(e *e2e.Envelope, raw []byte) error {
	if !bytes.Equal(e.Tag, r.tag) {
		return ErrWrongConversation
	}
	return r.ingest(e, raw)
}

func (r *Replica) ingest(e *e2e.Envelope, raw []byte) error {
	return r.ingestID(e, raw, crdt.OpID(e2e.ID(raw)))
}

func (r *Replica) ingestID(e *e2e.Envelope, raw []byte, id crdt.OpID) error {
	if r.decoded == nil {
		r.decoded = map[crdt.OpID]*e2e.Envelope{}
	}
	r.decoded[id] = e
	sender, err := r.senderOf(e)
	if err != nil {
		return err
	}
	op := crdt.Op{ID: id, Author: string(sender), Time: crdt.Timestamp{Wall: e.Wall, Logical: e.Logical}, Body: raw}
	for _, d := range e.Deps {
		dep, _ := crdt.OpIDFromBytes(d)
		op.Deps = append(op.Deps, dep)
	}
	r.refused = nil
	_, err = r.dag.Add(op, r.now()) // applies through onApply
	errs := r.refused
	r.refused = nil
	if err != nil && !errors.Is(err, crdt.ErrRefused) {
		delete(r.decoded, id)
		return errors.Join(append(errs, err)...)
	}
	if len(r.decoded) > 2*r.dag.MaxPending { // evicted ops: forget their envelopes
		clear(r.decoded)
	}
	return errors.Join(errs...)
}

// senderOf is e's sender, one string per sender, not one per op (every
// op keeps its author: a replica of n ops held n copies of a few IDs).
func (r *Replica) senderOf(e *e2e.Envelope) (peer.ID, error) {
	if id, ok := r.senders[string(e.Sender)]; ok {
		return id, nil
	}
	id, err := e.SenderID()
	if err != nil {
		return "", err
	}
	if len(r.senders) >= maxSenders {
		clear(r.senders) // any device may sign ops: bound what it costs
	}
	r.senders[string(id)] = id
	return id, nil
}

// maxSenders bounds senderOf's table.
const maxSenders = 1024

// onApply is the DAG's hook: each op is applied here as soon as the DAG
// takes it, so the next op's admission sees it.
func (r *Replica) onApply(op crdt.Op) {
	if err := r.apply(op); err != nil {
		r.refused = append(r.refused, err)
	}
}

// envelopeOf returns the decoded envelope of an op being admitted or
// applied (decoded by Receive, or decoded now from its body).
func (r *Replica) envelopeOf(op crdt.Op) (*e2e.Envelope, error) {
	if e := r.decoded[op.ID]; e != nil {
		return e, nil
	}
	if op.Body == nil {
		return nil, ErrRefused
	}
	e, err := e2e.Decode(op.Body)
	if err == nil && r.decoded != nil {
		r.decoded[op.ID] = e
	}
	return e, err
}

// apply runs once per op, in causal order: decrypt, authorise, index.
func (r *Replica) apply(op crdt.Op) error {
	r.cache, r.kids, r.heads = nil, nil, nil
	if r.hidden {
		r.rebuild = true // a new op may endorse a revoked author's ops
	}
	r.clock.Observe(op.Time)
	info := &opInfo{sender: peer.ID(op.Author), raw: op.Body}
	for _, d := range op.Deps {
		if di := r.ops[d]; di != nil {
			info.depth = max(info.depth, di.depth+1)
		}
	}
	r.ops[op.ID] = info
	info.before = r.union(op.Deps)
	if r.dag.Stub(op.ID) {
		delete(r.decoded, op.ID) // its body is not kept: nor is its envelope
		info.stub, info.raw = true, nil
		info.view = info.before
		r.stubs[info.sender]++
		r.nStubs++
		return nil
	}
	e, err := r.envelopeOf(op)
	delete(r.decoded, op.ID)
	if err != nil {
		info.view = info.before
		return err
	}
	e.Share(op.Body) // kept beside info.raw: the body once, not twice
	info.env = e
	if e.Kind == e2e.KindWelcome {
		info.epoch = e2e.EpochID(op.ID)
	} else {
		info.epoch, _ = e2e.EpochIDFromBytes(e.Epoch)
	}
	r.index(op.ID, info)
	r.judge(op.ID, info)
	if info.valid && (info.kind == kindText || info.kind == kindPhoto) && info.sender != r.dev.ID {
		r.fresh = append(r.fresh, op.ID)
	}
	if r.logApplied && !r.restoring && info.sender != r.dev.ID {
		r.applied = append(r.applied, op.ID)
	}
	if err := r.plainErr; err != nil {
		r.plainErr = nil
		// The message shows now, but would be lost after a restart (its
		// key is spent): the caller must hear of it.
		return fmt.Errorf("op %s: %w", op.ID.String()[:12], err)
	}
	if !info.valid && info.reason != nil {
		return fmt.Errorf("op %s: %w", op.ID.String()[:12], info.reason)
	}
	return nil
}

// index records what an op's header says, before anything is decrypted:
// a welcome's holders, and the chain slot of a content op (equivocation is
// two ops in one slot, seen from the headers alone).
func (r *Replica) index(id crdt.OpID, info *opInfo) {
	e := info.env
	switch e.Kind {
	case e2e.KindWelcome:
		info.kind = kindWelcome
		w, err := e2e.DecodeWelcome(e.Body)
		if err != nil {
			info.kind, info.reason = 0, err
			return
		}
		info.holders, info.ctlCommit = w.Holders(), w.ControlCommit
		if len(e.Deps) == 0 {
			r.roots = append(r.roots, id)
			if len(r.roots) > 1 {
				r.rebuild, r.dirty = true, true
			}
		}
	case e2e.KindContent:
		k := chainKey{info.epoch, info.sender}
		c := r.chains[k]
		if c == nil {
			c = &chain{slots: map[uint32]crdt.OpID{}}
			r.chains[k] = c
		}
		c.top = max(c.top, e.Index)
		first, taken := c.slots[e.Index]
		if !taken {
			c.slots[e.Index] = id
		} else if first != id {
			r.equivocal[first], r.equivocal[id] = true, true
			r.flags[info.sender] = ErrEquivocation.Error()
			r.rebuild, r.dirty = true, true
		}
	}
}

// decryptControl opens a control op with the control key of its epoch.
func (r *Replica) decryptControl(info *opInfo) {
	if info.p != nil || info.env == nil || info.env.Kind != e2e.KindControl {
		return
	}
	if key, ok := r.control[info.epoch]; ok {
		pt, err := e2e.OpenControl(info.env, key)
		if err != nil {
			info.reason = err
			return
		}
		r.setPayload(info, pt, true)
		return
	}
}

// decryptContent opens a content op, once it is authorised: chain keys
// move only for ops whose sender may write in their epoch.
func (r *Replica) decryptContent(id crdt.OpID, info *opInfo) {
	if info.p != nil || info.env == nil || info.env.Kind != e2e.KindContent || info.gone {
		return
	}
	if p := r.ownPayload; p != nil && info.sender == r.dev.ID {
		b := r.ownPlain
		r.ownPayload, r.ownPlain = nil, nil
		info.kind, info.p = p.Kind, p
		r.noteUrgent(p)
		if r.plain != nil {
			r.keepPlain(id, b)
		}
		return
	}
	if r.plain != nil && r.restoring {
		if b, ok := r.plain.Get(id); ok {
			r.setPayload(info, b, false)
			return
		}
	}
	pt, err := e2e.OpenContent(info.env, r.recv, r.now())
	if err != nil {
		if !errors.Is(err, e2e.ErrUnknownChain) {
			info.reason = err
		}
		return
	}
	r.setPayload(info, pt, false)
	if r.plain != nil && info.p != nil {
		r.keepPlain(id, pt)
	}
	if r.deleted[id] {
		r.destroy(id[:]) // its author's delete arrived first
	}
}

func (r *Replica) setPayload(info *opInfo, pt []byte, control bool) {
	p, err := decodePayload(pt)
	if err != nil {
		info.reason = err
		return
	}
	if isControl(p.Kind) != control {
		info.reason = fmt.Errorf("%w: kind %d in the wrong envelope", ErrInvalidPayload, p.Kind)
		return
	}
	if info.env.Urgent && !p.Urgent {
		// The header's bit is what relays and anchors moved the op by;
		// members see what the payload says. A routine op must not jump
		// queues as urgent. The other way round (an urgent payload under
		// a routine header) only crawls: it gains its sender nothing, and
		// it is how every urgent op was sealed before the header had the
		// bit, so it is taken.
		info.reason = ErrUrgencyMismatch
		return
	}
	info.kind, info.p = p.Kind, p
	r.noteUrgent(p)
}

// noteUrgent notes a payload read on this replica that makes State
// worth a look for the escalation loop (MayEscalate).
func (r *Replica) noteUrgent(p *payload) {
	if p.Urgent || p.Kind == kindEscalate {
		r.urgentSeen = true
	}
}

// MayEscalate reports whether State can hold anything an escalation loop
// acts on: an urgent message or an escalation, or one of this device's
// messages that retention deleted unread. It is false only when no urgent
// message and no escalation has ever been read on this replica (valid or
// not, standing or not) and nothing expired unread, so a caller may skip
// materialising a conversation it would find nothing in; it costs nothing.
func (r *Replica) MayEscalate() bool { return r.urgentSeen || len(r.expiredUnread) > 0 }

// open opens a welcome sealed to this device and installs its keys. A
// share that does not open, or opens to a secret other than the one the
// welcome commits to, flags the issuer (this device then rekeys).
func (r *Replica) open(info *opInfo) {
	if info.opened || info.env == nil {
		return
	}
	info.opened = true
	if !containsID(info.holders, r.dev.ID) || r.send[info.epoch] != nil || r.dropped[info.epoch] {
		return
	}
	w, err := e2e.DecodeWelcome(info.env.Body)
	if err != nil {
		return
	}
	keys, secret, err := e2e.OpenWelcome(info.env, w, r.dev.ID, r.dev.Prekeys, r.dev.CertKEM)
	switch {
	case errors.Is(err, e2e.ErrDecrypt), errors.Is(err, e2e.ErrBadCommit), errors.Is(err, e2e.ErrMalformed), errors.Is(err, e2e.ErrNoSeal):
		if info.sender != r.dev.ID {
			r.flags[info.sender] = fmt.Sprintf("welcome share did not open: %v", err)
		}
		return
	case err != nil:
		return // its prekey is gone: nothing to read
	}
	if r.conv.IsZero() {
		copy(r.conv[:], keys.Conv)
		r.creator = peer.ID(keys.Creator)
	}
	r.installSecret(info.epoch, secret, info.holders)
	// An epoch opened again (judged unauthorised, then authorised once
	// more) must not restart our chain below an index we used.
	if c := r.chains[chainKey{info.epoch, r.dev.ID}]; c != nil {
		r.send[info.epoch].SkipTo(c.top + 1)
	}
	for _, c := range keys.Control {
		ep, err := e2e.EpochIDFromBytes(c.Epoch)
		if err != nil || len(c.Key) != 32 {
			continue
		}
		var key e2e.Secret
		copy(key[:], c.Key)
		// History is taken only for epochs whose welcome is in this one's
		// past, and only if it matches that welcome's commitment to its
		// control key: nobody plants a key of an epoch it did not make.
		w := r.ops[crdt.OpID(ep)]
		if _, known := r.control[ep]; known || w == nil || !info.before.has(crdt.OpID(ep)) {
			continue
		}
		if cc := e2e.ControlCommit(key); hmac.Equal(cc[:], w.ctlCommit) {
			r.control[ep] = key
		}
	}
	r.rebuild, r.dirty = true, true // control ops we could not read may open now
}

// forget drops the chains of an epoch this device will not use.
func (r *Replica) forget(epoch e2e.EpochID) {
	r.recv.DropEpoch(epoch)
	delete(r.send, epoch)
}

// unopen drops the chains of a welcome opened only to learn history, once
// it is judged unauthorised: this device never writes or reads messages in
// it. Its control key stays: control ops of an unauthorised epoch count
// for nothing, and reading them keeps this device's judgement the same as
// that of a device which opened the welcome while it was authorised.
func (r *Replica) unopen(info *opInfo) {
	r.forget(info.epoch)
	info.opened = false
}

// installSecret derives an epoch's chains and control key; the caller
// then forgets the secret.
func (r *Replica) installSecret(epoch e2e.EpochID, s e2e.Secret, holders []peer.ID) {
	r.recv.Install(epoch, s, holders)
	r.send[epoch] = &e2e.SendChain{Epoch: epoch, CK: e2e.ChainKey(s, r.dev.ID)}
	r.control[epoch] = e2e.ControlKey(s)
	clear(s[:])
}

func (r *Replica) target(b []byte) *opInfo {
	id, err := crdt.OpIDFromBytes(b)
	if err != nil {
		return nil
	}
	return r.ops[id]
}

func uniq(ids []peer.ID) []peer.ID {
	seen := map[peer.ID]bool{}
	var out []peer.ID
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func containsID(ids []peer.ID, id peer.ID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// destroy deletes a message's plaintext on this device: the tombstone stays.
func (r *Replica) destroy(target []byte) {
	t := r.target(target)
	id, err := crdt.OpIDFromBytes(target)
	if err != nil {
		return
	}
	r.deleted[id] = true
	if t == nil || t.p == nil {
		return
	}
	for _, c := range t.p.Chunks { // a deleted photo's image goes too
		if ct := r.target(c); ct != nil && ct.kind == kindChunk && ct.sender == t.sender {
			r.destroy(c)
		}
	}
	t.p = &payload{Kind: t.p.Kind, Target: t.p.Target, Urgent: t.p.Urgent}
	if r.plain != nil {
		// Overwrite with the tombstone: the text is gone, the fact stays.
		if b, err := detcbor.Marshal(t.p); err == nil {
			if err := r.plain.Replace(id, b); err != nil {
				r.plainErr = fmt.Errorf("persist plaintext: %w", err)
			}
		}
	}
}

// SyncKeys gives each of ids its causal key for sync
// (e2e.Envelope.SyncKey); for an op this replica holds without its
// envelope (a stub, or deleted by retention and restored), the key of the
// signed clock its DAG keeps (e2e.ClockKey: without the urgency bit) —
// every holder must key an op alike, or reconciliation lists it and its
// neighbours in every session (mesh: ranges follow the clock); 0 for an
// op it does not hold.
func (r *Replica) SyncKeys(ids []crdt.OpID) []uint64 {
	out := make([]uint64, len(ids))
	for i, id := range ids {
		if info := r.ops[id]; info != nil && info.env != nil {
			out[i] = info.env.SyncKey()
		} else if r.dag.Has(id) {
			ts := r.dag.Stamp(id)
			out[i] = e2e.ClockKey(ts.Wall, ts.Logical)
		}
	}
	return out
}

// Fresh returns the messages from others applied since the last call: what
// this device should acknowledge as delivered.
func (r *Replica) Fresh() []crdt.OpID {
	out := r.fresh
	r.fresh = nil
	return out
}

// keepPlain persists a decrypted payload; a failure (a full disk) is
// reported by apply.
func (r *Replica) keepPlain(id crdt.OpID, b []byte) {
	if err := r.plain.Put(id, b); err != nil {
		r.plainErr = fmt.Errorf("persist plaintext: %w", err)
	}
}
