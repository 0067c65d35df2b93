package chat

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
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

// view is the set of valid membership and welcome ops in an op's causal
// past. Views are immutable and shared between ops while nothing changes.
type view struct {
	set     map[crdt.OpID]struct{}
	members *membership // cache
}

// opInfo is what a replica knows of one applied op.
type opInfo struct {
	env    *e2e.Envelope
	raw    []byte
	sender peer.ID
	epoch  e2e.EpochID
	kind   uint8    // 0: not readable by this device
	p      *payload // nil if unreadable or destroyed
	before *view    // causal past
	view   *view    // causal past and the op itself
	valid  bool
	reason error
	gone   bool
	// welcome: who holds the epoch
	holders []peer.ID
}

// Replica is one device's copy of a conversation.
type Replica struct {
	dev     *Device
	dir     Directory
	conv    ConversationID
	creator peer.ID
	tag     []byte
	now     func() time.Time

	dag       *crdt.DAG
	clock     *crdt.Clock
	recv      *e2e.RecvChains
	send      map[e2e.EpochID]*e2e.SendChain
	control   map[e2e.EpochID]e2e.Secret
	ops       map[crdt.OpID]*opInfo
	revoked   func(peer.ID) bool
	held      map[crdt.OpID]map[peer.ID]bool
	plain     Plaintexts
	empty     *view       // the view of no ops: this replica's own, as views cache membership
	openErr   error       // from WithStore
	fresh     []crdt.OpID // messages from others applied since Fresh was last called
	plainErr  error       // a plaintext could not be persisted while applying
	restoring bool        // Restore is replaying persisted ops

	rebuild bool // keys arrived or revocations changed: recompute views
	cache   *State
	kids    map[crdt.OpID][]crdt.OpID // children index, rebuilt on demand
	heads   *membership               // membership at the heads, until the next apply

	// Set while one of our own ops is applied: its decoded envelope and
	// payload, so we do not decode and decrypt what we just built.
	ownPayload *payload
	decoded    map[crdt.OpID]*e2e.Envelope // envelopes decoded by Receive, until applied
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
		ops: map[crdt.OpID]*opInfo{}, held: map[crdt.OpID]map[peer.ID]bool{},
		empty: &view{set: map[crdt.OpID]struct{}{}},
	}
	for _, o := range opts {
		o(r)
	}
	if r.dag == nil {
		r.dag, _ = crdt.NewDAG(crdt.NewMemStore())
	}
	r.clock = crdt.NewClock(r.now)
	return r
}

// Create starts a conversation with a title and members (this device is
// the creator and first admin). It returns the replica and the envelopes to
// publish: the root welcome and the create op.
func Create(dev *Device, dir Directory, title string, members []peer.ID, opts ...Option) (*Replica, [][]byte, error) {
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
func CreateWithID(id ConversationID, dev *Device, dir Directory, title string, members []peer.ID, opts ...Option) (*Replica, [][]byte, error) {
	if len(title) > maxTitle {
		return nil, nil, fmt.Errorf("%w: title", ErrTooLarge)
	}
	r := newReplica(dev, dir, opts...)
	r.conv = id
	r.creator = dev.ID
	r.tag = e2e.Tag(r.conv[:], r.creator)
	all := uniq(append([]peer.ID{dev.ID}, members...))
	welcome, err := r.rekey(all)
	if err != nil {
		return nil, nil, err
	}
	p := &payload{Kind: kindCreate, Text: title}
	for _, m := range all {
		p.Members = append(p.Members, []byte(m))
	}
	create, err := r.emit(p)
	if err != nil {
		return nil, nil, err
	}
	return r, [][]byte{welcome, create}, nil
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
	if r.held[op] == nil {
		r.held[op] = map[peer.ID]bool{}
	}
	r.held[op][by] = true
	r.cache = nil
}

// Receive takes an envelope from the mesh. It returns ErrDuplicate for a
// known op; an op whose dependencies are missing waits (see Missing).
// Rejections of the ops it applied (unauthorised, unreadable payload) are
// joined into the error; the ops stay in the DAG.
func (r *Replica) Receive(raw []byte) error {
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
	return r.ingest(e, raw)
}

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
	id := crdt.OpID(e2e.ID(raw))
	if r.decoded == nil {
		r.decoded = map[crdt.OpID]*e2e.Envelope{}
	}
	r.decoded[id] = e
	sender, err := e.SenderID()
	if err != nil {
		return err
	}
	op := crdt.Op{ID: id, Author: string(sender), Time: crdt.Timestamp{Wall: e.Wall, Logical: e.Logical}, Body: raw}
	for _, d := range e.Deps {
		dep, _ := crdt.OpIDFromBytes(d)
		op.Deps = append(op.Deps, dep)
	}
	applied, err := r.dag.Add(op, r.now())
	if err != nil {
		delete(r.decoded, id)
		return err
	}
	if len(r.decoded) > 2*r.dag.MaxPending { // evicted ops: forget their envelopes
		clear(r.decoded)
	}
	var errs []error
	for _, a := range applied {
		if err := r.apply(a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// apply runs once per op, in causal order: decrypt, authorise, index.
func (r *Replica) apply(op crdt.Op) error {
	r.cache, r.kids, r.heads = nil, nil, nil
	if r.revoked != nil {
		r.rebuild = true // a new op may endorse a revoked author's ops
	}
	r.clock.Observe(op.Time)
	e := r.decoded[op.ID]
	delete(r.decoded, op.ID)
	if e == nil {
		var err error
		if e, err = e2e.Decode(op.Body); err != nil {
			return err
		}
	}
	info := &opInfo{env: e, raw: op.Body, sender: peer.ID(op.Author)}
	info.epoch, _ = e2e.EpochIDFromBytes(e.Epoch)
	r.ops[op.ID] = info
	info.before = r.union(op.Deps)
	r.decrypt(op.ID, info)
	r.authorise(op.ID, info)
	r.extend(op.ID, info)
	if info.valid && info.kind == kindDelete {
		r.destroy(info.p.Target)
	}
	if info.valid && (info.kind == kindText || info.kind == kindPhoto) && info.sender != r.dev.ID {
		r.fresh = append(r.fresh, op.ID)
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

func (r *Replica) extend(id crdt.OpID, info *opInfo) {
	info.view = info.before
	if info.valid && (isMembership(info.kind) || info.kind == kindWelcome) && r.standing(id) {
		v := &view{set: make(map[crdt.OpID]struct{}, len(info.before.set)+1)}
		for k := range info.before.set {
			v.set[k] = struct{}{}
		}
		v.set[id] = struct{}{}
		info.view = v
	}
}

// union is the view of a set of ops: shared when they agree.
func (r *Replica) union(ids []crdt.OpID) *view {
	var out *view
	merged := false
	for _, id := range ids {
		info := r.ops[id]
		if info == nil || info.view == nil {
			continue
		}
		switch {
		case out == nil:
			out = info.view
		case out == info.view:
		default:
			if !merged {
				m := &view{set: make(map[crdt.OpID]struct{}, len(out.set)+len(info.view.set))}
				for k := range out.set {
					m.set[k] = struct{}{}
				}
				out, merged = m, true
			}
			for k := range info.view.set {
				out.set[k] = struct{}{}
			}
		}
	}
	if out == nil {
		return r.empty
	}
	return out
}

func (r *Replica) decrypt(id crdt.OpID, info *opInfo) {
	e := info.env
	switch e.Kind {
	case e2e.KindWelcome:
		info.kind = kindWelcome
		w, err := e2e.DecodeWelcome(e.Body)
		if err != nil {
			info.reason = err
			return
		}
		for _, m := range w.Members {
			info.holders = append(info.holders, peer.ID(m))
		}
		if r.recv.HasEpoch(info.epoch) || !slices.Contains(info.holders, r.dev.ID) {
			return
		}
		keys, err := e2e.OpenWelcome(w, r.tag, info.epoch, r.dev.ID, r.dev.Prekeys, r.dev.CertKEM)
		if err != nil {
			return // not for us, or its prekey is gone: nothing to read
		}
		r.install(info.epoch, keys, info.holders)
	case e2e.KindControl:
		key, ok := r.control[info.epoch]
		if !ok {
			return
		}
		pt, err := e2e.OpenControl(e, key)
		if err != nil {
			info.reason = err
			return
		}
		r.setPayload(info, pt, true)
	case e2e.KindContent:
		if info.p != nil {
			return
		}
		if p := r.ownPayload; p != nil && info.sender == r.dev.ID {
			r.ownPayload = nil
			info.kind, info.p = p.Kind, p
			if r.plain != nil {
				if b, err := detcbor.Marshal(p); err == nil {
					r.keepPlain(id, b)
				}
			}
			return
		}
		if r.plain != nil && r.restoring {
			if b, ok := r.plain.Get(id); ok {
				r.setPayload(info, b, false)
				return
			}
		}
		pt, err := e2e.OpenContent(e, r.recv, r.now())
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
	info.kind, info.p = p.Kind, p
}

// install takes the keys a welcome gave this device.
func (r *Replica) install(epoch e2e.EpochID, k *e2e.EpochKeys, holders []peer.ID) {
	var s e2e.Secret
	copy(s[:], k.Secret)
	if r.conv.IsZero() {
		copy(r.conv[:], k.Conv)
		r.creator = peer.ID(k.Creator)
	}
	r.recv.Install(epoch, s, holders)
	r.send[epoch] = &e2e.SendChain{Epoch: epoch, CK: e2e.ChainKey(s, r.dev.ID)}
	r.control[epoch] = e2e.ControlKey(s)
	for _, c := range k.Control {
		if ep, err := e2e.EpochIDFromBytes(c.Epoch); err == nil && len(c.Key) == 32 {
			if _, known := r.control[ep]; !known {
				var key e2e.Secret
				copy(key[:], c.Key)
				r.control[ep] = key
				r.rebuild = true // control ops we could not read may open now
			}
		}
	}
	clear(s[:])
}

// authorise decides an op's validity from its causal past.
func (r *Replica) authorise(id crdt.OpID, info *opInfo) {
	info.valid = false
	if info.kind == 0 {
		return
	}
	m := r.membersOf(info.before)
	deps := r.dag.Deps(id)
	switch k := info.kind; {
	case k == kindWelcome:
		if len(deps) == 0 {
			info.valid = info.sender == r.creator
			if !info.valid {
				info.reason = fmt.Errorf("%w: root welcome not by the creator", ErrNotAuthorised)
			}
			return
		}
		info.valid = m.members[info.sender]
	case k == kindCreate:
		info.valid = info.sender == r.creator && len(deps) == 1 && r.ops[deps[0]] != nil &&
			r.ops[deps[0]].kind == kindWelcome && len(r.dag.Deps(deps[0])) == 0 && !m.created
	case k == kindAdd || k == kindRemove || k == kindPromote || k == kindRetention:
		info.valid = m.admins[info.sender] && (k == kindRetention || len(info.p.Member) > 0)
	case k == kindLeave, k == kindReceipt, k == kindText, k == kindReact, k == kindUnreact, k == kindPhoto, k == kindChunk:
		info.valid = m.members[info.sender]
	case k == kindEdit || k == kindDelete:
		t := r.target(info.p.Target)
		info.valid = m.members[info.sender] && t != nil && (t.kind == kindText || t.kind == kindPhoto) && t.sender == info.sender
	}
	if !info.valid && info.reason == nil {
		info.reason = fmt.Errorf("%w: kind %d by %s", ErrNotAuthorised, info.kind, info.sender)
	}
}

func (r *Replica) target(b []byte) *opInfo {
	id, err := crdt.OpIDFromBytes(b)
	if err != nil {
		return nil
	}
	return r.ops[id]
}

// membership is the state a view implies.
type membership struct {
	created   bool
	members   map[peer.ID]bool
	admins    map[peer.ID]bool
	retention crdt.LWW[int64]
	epoch     crdt.OpID // the welcome in use
}

func (r *Replica) membersOf(v *view) *membership {
	if v.members != nil {
		return v.members
	}
	adds, removes, grants := map[peer.ID][]crdt.OpID{}, map[peer.ID][]crdt.OpID{}, map[peer.ID][]crdt.OpID{}
	m := &membership{members: map[peer.ID]bool{}, admins: map[peer.ID]bool{}}
	var welcomes []crdt.OpID
	for id := range v.set {
		info := r.ops[id]
		switch info.kind {
		case kindWelcome:
			welcomes = append(welcomes, id)
		case kindCreate:
			m.created = true
			for _, mb := range info.p.Members {
				adds[peer.ID(mb)] = append(adds[peer.ID(mb)], id)
			}
			adds[info.sender] = append(adds[info.sender], id)
			grants[info.sender] = append(grants[info.sender], id)
		case kindAdd:
			adds[peer.ID(info.p.Member)] = append(adds[peer.ID(info.p.Member)], id)
		case kindRemove:
			removes[peer.ID(info.p.Member)] = append(removes[peer.ID(info.p.Member)], id)
		case kindLeave:
			removes[info.sender] = append(removes[info.sender], id)
		case kindPromote:
			grants[peer.ID(info.p.Member)] = append(grants[peer.ID(info.p.Member)], id)
		case kindRetention:
			k, _ := r.dag.Key(id)
			m.retention.Set(info.p.Retention, crdt.Stamp{Key: k, ID: id})
		}
	}
	after := func(ops []crdt.OpID, rm []crdt.OpID) bool {
		for _, a := range ops {
			ok := true
			for _, x := range rm {
				if _, seen := r.ops[a].before.set[x]; !seen {
					ok = false // a removal not in this add's past: remove wins
					break
				}
			}
			if ok {
				return true
			}
		}
		return false
	}
	for p, a := range adds {
		if after(a, removes[p]) {
			m.members[p] = true
		}
	}
	for p, g := range grants {
		if m.members[p] && after(g, removes[p]) {
			m.admins[p] = true
		}
	}
	// The epoch in use: the latest welcome not superseded by another in
	// this view (concurrent ones: highest sort key, then ID).
	var best crdt.OpID
	var bestStamp crdt.Stamp
	for _, w := range welcomes {
		superseded := false
		for _, o := range welcomes {
			if _, ok := r.ops[o].before.set[w]; ok && o != w {
				superseded = true
				break
			}
		}
		if superseded {
			continue
		}
		k, _ := r.dag.Key(w)
		if st := (crdt.Stamp{Key: k, ID: w}); best.IsZero() || st.Compare(bestStamp) > 0 {
			best, bestStamp = w, st
		}
	}
	m.epoch = best
	v.members = m
	return m
}

// standing applies the revoked-sender rule: an op of a revoked author stands
// only if an op of an unrevoked author depends on it.
func (r *Replica) standing(id crdt.OpID) bool {
	if r.revoked == nil {
		return true
	}
	info := r.ops[id]
	if !r.revoked(info.sender) {
		return true
	}
	return r.endorsed(id)
}

func (r *Replica) endorsed(id crdt.OpID) bool {
	// Walk descendants looking for an unrevoked author.
	seen := map[crdt.OpID]bool{}
	stack := []crdt.OpID{id}
	for len(stack) > 0 {
		cur := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, c := range r.children(cur) {
			if seen[c] {
				continue
			}
			seen[c] = true
			if !r.revoked(r.ops[c].sender) {
				return true
			}
			stack = append(stack, c)
		}
	}
	return false
}

func (r *Replica) children(id crdt.OpID) []crdt.OpID {
	if r.kids == nil {
		r.kids = map[crdt.OpID][]crdt.OpID{}
		for oid := range r.ops {
			for _, d := range r.dag.Deps(oid) {
				r.kids[d] = append(r.kids[d], oid)
			}
		}
	}
	return r.kids[id]
}

// refresh recomputes every view when keys or revocations changed.
func (r *Replica) refresh() {
	if !r.rebuild {
		return
	}
	r.rebuild = false
	r.kids, r.heads = nil, nil
	for _, id := range r.dag.Order() {
		info := r.ops[id]
		if info == nil {
			continue
		}
		info.before = r.union(r.dag.Deps(id))
		if info.kind == 0 && info.env.Kind == e2e.KindControl && !info.gone {
			r.decrypt(id, info)
		}
		r.authorise(id, info)
		if info.valid && !r.standing(id) {
			info.valid = false
		}
		r.extend(id, info)
	}
	r.cache = nil
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

// destroy deletes a message's plaintext on this device: the tombstone stays.
func (r *Replica) destroy(target []byte) {
	t := r.target(target)
	id, err := crdt.OpIDFromBytes(target)
	if t == nil || err != nil || t.p == nil {
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
			r.keepPlain(id, b)
		}
	}
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
