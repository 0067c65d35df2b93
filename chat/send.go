package chat

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/patient"
)

// headView is the membership at this replica's heads: what it acts on.
func (r *Replica) headView() *membership {
	r.refresh()
	if r.heads == nil {
		r.heads = r.membersOf(r.union(r.dag.AllHeads()))
	}
	return r.heads
}

// current is the epoch this device sends content in: of the welcomes that
// may be in use at its heads, the preferred one it holds keys of.
func (r *Replica) current(m *membership) (e2e.EpochID, bool) {
	for i := len(m.epochs) - 1; i >= 0; i-- {
		w := m.epochs[i]
		// Only an epoch no later one supersedes: never fall back to an
		// older epoch because a newer one did not open here.
		if slices.ContainsFunc(m.epochs, func(o crdt.OpID) bool { return o != w && r.ops[o].before.has(w) }) {
			continue
		}
		if ep := e2e.EpochID(w); r.send[ep] != nil {
			return ep, true
		}
	}
	return e2e.EpochID{}, false
}

// controlEpoch is the epoch a control op of ours is sealed in: the current
// one, else the latest authorised welcome in our past we hold (a member
// leaving, an admin changing retention before a rekey).
func (r *Replica) controlEpoch(m *membership) (e2e.EpochID, bool) {
	if ep, ok := r.current(m); ok {
		return ep, true
	}
	var best crdt.OpID
	var bestStamp crdt.Stamp
	for id := range r.union(r.dag.AllHeads()).set {
		info := r.ops[id]
		if info.kind != kindWelcome || !info.valid || r.send[info.epoch] == nil {
			continue
		}
		k, _ := r.dag.Key(id)
		if st := (crdt.Stamp{Key: k, ID: id}); best.IsZero() || st.Compare(bestStamp) > 0 {
			best, bestStamp = id, st
		}
	}
	return e2e.EpochID(best), !best.IsZero()
}

// history is what a member gets with a welcome: the control keys of the
// epochs it did not hold (all of them for a new member; for a member whose
// removal turned out void, those made while it was out), so it can
// authorise the whole DAG. Never message keys. held is holders by epoch.
func (r *Replica) history(m peer.ID, held map[e2e.EpochID]map[peer.ID]bool) []e2e.ControlKeys {
	var out []e2e.ControlKeys
	for ep, k := range r.control {
		if held[ep][m] {
			continue
		}
		out = append(out, e2e.ControlKeys{Epoch: slices.Clone(ep[:]), Key: slices.Clone(k[:])})
	}
	slices.SortFunc(out, func(a, b e2e.ControlKeys) int { return bytes.Compare(a.Epoch, b.Epoch) })
	return out
}

// rekey starts a new epoch for members and returns its welcome envelope.
func (r *Replica) rekey(members []peer.ID, urgent bool) ([]byte, error) {
	now := r.now()
	secret := e2e.NewSecret()
	defer clear(secret[:])
	keys := e2e.EpochKeys{Conv: r.conv[:], Creator: []byte(r.creator)}
	members = uniq(members)
	slices.Sort(members)
	held := make(map[e2e.EpochID]map[peer.ID]bool, len(r.control))
	for ep := range r.control {
		if w := r.ops[crdt.OpID(ep)]; w != nil {
			set := make(map[peer.ID]bool, len(w.holders))
			for _, h := range w.holders {
				set[h] = true
			}
			held[ep] = set
		}
	}
	var to []e2e.Recipient
	for _, m := range members {
		if m == r.dev.ID {
			continue
		}
		rc, err := r.dir.Recipient(m, now)
		if err != nil {
			return nil, fmt.Errorf("seal welcome for %s: %w", m, err)
		}
		rc.Control = r.history(m, held)
		to = append(to, rc)
	}
	env := r.newEnvelope()
	env.Urgent = urgent
	if err := e2e.SealWelcome(env, secret, keys, members, to); err != nil {
		return nil, err
	}
	raw, err := r.signed(env)
	if err != nil {
		return nil, err
	}
	// Install our own keys before forgetting the secret: the epoch is
	// named by the welcome's op ID.
	r.installSecret(e2e.EpochID(e2e.ID(raw)), secret, members)
	return raw, r.ingest(env, raw)
}

// parents are the deps of our next op: the heads, with every stub replaced
// by its own parents — we cannot serve a stub's body, so no op of ours
// depends on one — and so is every op of a revoked sender that does not
// stand: depending on it would endorse it (the revoked-sender rule), and
// a relay could make a stolen phone's op stand just by handing it to us
// before our next receipt. Past MaxDeps heads, the authorised membership ops and
// welcomes go first, so nobody making many heads can keep a removal out of
// our ops' past.
func (r *Replica) parents() []crdt.OpID { return r.capDeps(r.standingHeads()) }

// standingHeads are the heads an op of ours may depend on, before the
// MaxDeps cap: stubs and ops that do not stand replaced by their parents.
func (r *Replica) standingHeads() []crdt.OpID {
	return r.descendPast(r.dag.AllHeads(), func(h crdt.OpID) bool { return r.dag.Stub(h) || !r.standing(h) })
}

// descendPast replaces each op of heads for which skip holds by its
// dependencies, down to ops for which it does not; each op once.
func (r *Replica) descendPast(heads []crdt.OpID, skip func(crdt.OpID) bool) []crdt.OpID {
	heads = slices.Clone(heads)
	var out []crdt.OpID
	seen := map[crdt.OpID]bool{}
	for len(heads) > 0 {
		h := heads[len(heads)-1]
		heads = heads[:len(heads)-1]
		if seen[h] {
			continue
		}
		seen[h] = true
		if skip(h) {
			heads = append(heads, r.dag.Deps(h)...)
			continue
		}
		out = append(out, h)
	}
	return out
}

// capDeps keeps at most MaxDeps of heads, membership ops and welcomes
// first, sorted (in place: out is reordered).
func (r *Replica) capDeps(out []crdt.OpID) []crdt.OpID {
	if len(out) > crdt.MaxDeps {
		weight := func(id crdt.OpID) int {
			switch info := r.ops[id]; {
			case info == nil || !info.valid:
				return 2
			case isMembership(info.kind) || info.kind == kindWelcome:
				return 0
			}
			return 1
		}
		slices.SortFunc(out, func(a, b crdt.OpID) int {
			if c := weight(a) - weight(b); c != 0 {
				return c
			}
			return b.Compare(a)
		})
		out = out[:crdt.MaxDeps]
	}
	slices.SortFunc(out, crdt.OpID.Compare)
	return out
}

func (r *Replica) newEnvelope() *e2e.Envelope {
	heads := r.parents()
	deps := make([][32]byte, len(heads))
	for i, h := range heads {
		deps[i] = h
	}
	e := e2e.New(r.tag, r.dev.ID, deps)
	t := r.clock.Now()
	e.Wall, e.Logical = t.Wall, t.Logical
	return e
}

func (r *Replica) signed(e *e2e.Envelope) ([]byte, error) {
	if err := e.Sign(r.dev.Key); err != nil {
		return nil, err
	}
	return e.Encode()
}

// finish signs, encodes and applies our own envelope.
func (r *Replica) finish(e *e2e.Envelope) ([]byte, error) {
	raw, _, err := r.finishOp(e)
	return raw, err
}

// finishOp is finish, also returning the op ID (hashed once, here).
func (r *Replica) finishOp(e *e2e.Envelope) (raw []byte, id crdt.OpID, err error) {
	if raw, err = r.signed(e); err != nil {
		return nil, id, err
	}
	// Once applied locally the op is part of our DAG and must be published
	// whatever the error, or our later ops would wait on it forever.
	id = crdt.OpID(e2e.ID(raw))
	return raw, id, r.ingestID(e, raw, id)
}

// emit seals and applies one op of ours, after checking it would be
// authorised: an op every other replica rejects is never sent.
func (r *Replica) emit(p *payload) ([]byte, error) {
	raw, _, err := r.emitOp(p)
	return raw, err
}

// emitOp is emit, also returning the op's ID.
func (r *Replica) emitOp(p *payload) ([]byte, crdt.OpID, error) {
	if err := r.permitted(p); err != nil {
		return nil, crdt.OpID{}, err
	}
	env, err := r.seal(p)
	if err != nil {
		return nil, crdt.OpID{}, err
	}
	return r.finishOp(env)
}

// permitted mirrors authorise for an op of ours at the current heads.
func (r *Replica) permitted(p *payload) error {
	m := r.headView()
	ok := false
	switch p.Kind {
	case kindCreate:
		ok = !m.created && r.creator == r.dev.ID
	case kindAdd, kindPromote, kindRetention, kindRole:
		ok = m.admins[r.dev.ID]
	case kindRemove:
		t := peer.ID(p.Member)
		ok = m.admins[r.dev.ID] && (t == r.dev.ID || !m.admins[t] || m.rank[r.dev.ID].compare(m.rank[t]) < 0 ||
			(r.revoked != nil && r.revoked(t)))
	case kindEscalate:
		t := r.target(p.Target)
		ok = m.admins[r.dev.ID] && t != nil
	case kindEdit, kindDelete:
		t := r.target(p.Target)
		ok = m.members[r.dev.ID] && t != nil && (t.kind == kindText || t.kind == kindPhoto) && t.sender == r.dev.ID
	default:
		ok = m.members[r.dev.ID]
	}
	if !ok {
		return fmt.Errorf("%w: kind %d", ErrNotAuthorised, p.Kind)
	}
	return nil
}

// seal builds one op of ours, unsigned and unapplied: content in the
// current epoch, control ops in controlEpoch, create in the root epoch.
func (r *Replica) seal(p *payload) (*e2e.Envelope, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	pt, err := marshalPayload(p)
	if err != nil {
		return nil, err
	}
	env := r.newEnvelope()
	env.Urgent = p.Urgent // in the signed header too, before sealing (associated data)
	m := r.headView()
	var ep e2e.EpochID
	var ok bool
	switch {
	case p.Kind == kindCreate:
		heads := r.dag.Heads()
		ok = len(heads) == 1 && r.send[e2e.EpochID(heads[0])] != nil
		if ok {
			ep = e2e.EpochID(heads[0])
		}
	case p.Kind == kindDelete:
		ep = e2e.EpochID(r.firstRoot())
		ok = !ep.IsZero() && r.hasControl(ep)
	case isControl(p.Kind):
		ep, ok = r.controlEpoch(m)
	default:
		ep, ok = r.current(m)
	}
	if !ok {
		return nil, ErrNoKeys
	}
	if isControl(p.Kind) {
		if err := e2e.SealControl(env, ep, r.control[ep], pt); err != nil {
			return nil, err
		}
	} else {
		if err := e2e.SealContent(env, r.send[ep], pt); err != nil {
			return nil, err
		}
		r.ownPayload, r.ownPlain = p, pt
	}
	return env, nil
}

// Out is what a command produced, so that nothing decodes it again.
type Out struct {
	// Envelopes to publish, in order: a welcome before the ops that need
	// its epoch.
	Envelopes [][]byte
	// ID is the op the caller asked for (zero if none was made).
	ID crdt.OpID
	// Welcomes are the welcome envelopes among Envelopes; Inboxes the
	// devices they are sealed to (this device excepted), whose inboxes
	// they also go to.
	Welcomes [][]byte
	Inboxes  []peer.ID
}

// add appends an op this command made.
func (o *Out) add(raw []byte) {
	if raw != nil {
		o.addOp(raw, crdt.OpID(e2e.ID(raw)))
	}
}

// addOp appends an op this command made whose ID is known.
func (o *Out) addOp(raw []byte, id crdt.OpID) {
	if raw != nil {
		o.Envelopes = append(o.Envelopes, raw)
		o.ID = id
	}
}

// welcome appends a welcome sealed to members.
func (o *Out) welcome(raw []byte, members []peer.ID, self peer.ID) {
	o.Envelopes = append(o.Envelopes, raw)
	o.Welcomes = append(o.Welcomes, raw)
	for _, m := range members {
		if m != self && !slices.Contains(o.Inboxes, m) {
			o.Inboxes = append(o.Inboxes, m)
		}
	}
}

// Merge appends what another step (or command) produced, keeping o's ID.
func (o *Out) Merge(p Out) {
	o.Envelopes = append(o.Envelopes, p.Envelopes...)
	o.Welcomes = append(o.Welcomes, p.Welcomes...)
	for _, m := range p.Inboxes {
		if !slices.Contains(o.Inboxes, m) {
			o.Inboxes = append(o.Inboxes, m)
		}
	}
}

// prepare makes sure an epoch in use reaches exactly the members, starting
// a new one if not (a removal, an add, or concurrent changes by two admins).
func (r *Replica) prepare() (Out, error) { return r.prepareEpoch(false) }

// prepareEpoch is prepare; urgent marks the welcome urgent in its header
// (the one an escalation's targets need to read it: "Urgency in the
// header" in doc.go).
func (r *Replica) prepareEpoch(urgent bool) (Out, error) {
	var out Out
	m := r.headView()
	if !m.members[r.dev.ID] {
		return out, ErrNotMember
	}
	if r.blind && r.stillBlind() {
		return out, ErrBlind
	}
	if _, ok := r.current(m); ok {
		return out, nil
	}
	var members []peer.ID
	for id := range m.members {
		members = append(members, id)
	}
	w, err := r.rekey(members, urgent)
	if w != nil {
		out.welcome(w, members, r.dev.ID)
	}
	return out, err
}

// do prepares the epoch and emits p, returning every envelope to publish.
func (r *Replica) do(p *payload) (Out, error) {
	out, err := r.prepare()
	if err != nil {
		return Out{}, err
	}
	raw, id, err := r.emitOp(p)
	out.addOp(raw, id)
	return out, err
}

// SendOptions qualify a message.
type SendOptions struct {
	Urgent  bool      // asks every recipient for an explicit acknowledgement
	ReplyTo crdt.OpID // zero for none
	// AckWithin: an urgent message wants its acknowledgement within this
	// (0: DefaultAckWithin; MinAckWithin to MaxAckWithin, whole seconds);
	// urgent messages only.
	AckWithin time.Duration
}

// Send posts a text message. It returns the envelopes to publish (a welcome
// first if a new epoch was needed) and the message's op ID in Out.
func (r *Replica) Send(text string, o SendOptions) (Out, error) {
	p := &payload{Kind: kindText, Text: text, Urgent: o.Urgent}
	switch {
	case o.Urgent:
		s, err := AckWithinSeconds(o.AckWithin)
		if err != nil {
			return Out{}, err
		}
		p.AckWithin = s
	case o.AckWithin != 0:
		return Out{}, ErrAckWithin
	}
	if !o.ReplyTo.IsZero() {
		p.Target = o.ReplyTo[:]
	}
	return r.do(p)
}

// Edit replaces the text of one of this device's messages.
func (r *Replica) Edit(msg crdt.OpID, text string) (Out, error) {
	return r.do(&payload{Kind: kindEdit, Target: msg[:], Text: text})
}

// Delete deletes one of this device's messages everywhere: the plaintext is
// destroyed, a tombstone stays.
func (r *Replica) Delete(msg crdt.OpID) (Out, error) {
	return r.do(&payload{Kind: kindDelete, Target: msg[:]})
}

// React adds an emoji reaction to a message.
func (r *Replica) React(msg crdt.OpID, emoji string) (Out, error) {
	if len(emoji) > maxEmojiText {
		return Out{}, ErrTooLarge
	}
	return r.do(&payload{Kind: kindReact, Target: msg[:], Text: emoji})
}

// Unreact removes this device's reaction (the tags it has observed).
func (r *Replica) Unreact(msg crdt.OpID, emoji string) (Out, error) {
	p := &payload{Kind: kindUnreact, Target: msg[:], Text: emoji}
	for _, t := range r.reactionTags(msg, emoji, r.dev.ID) {
		p.Tags = append(p.Tags, t[:])
	}
	return r.do(p)
}

// Receipt records that this device has delivered, read or acknowledged
// messages. Delivered and Read are cumulative (see "Receipts" in doc.go):
// with no msgs, one op covers everything this device holds; with msgs,
// those messages and their causal past. Acknowledged names each message.
// msgs must be messages this device holds and can read (ErrNoSuchMessage
// if none is). Receipts depend on everything seen, so they also endorse
// it.
func (r *Replica) Receipt(level int, msgs ...crdt.OpID) (Out, error) {
	return r.receipt(level, msgs)
}

// Add adds a member (admins only); the next message goes in a new epoch.
func (r *Replica) Add(member peer.ID) (Out, error) {
	return r.member(kindAdd, member)
}

// Remove removes members (admins only), in one op each and one new epoch
// they never receive.
func (r *Replica) Remove(members ...peer.ID) (Out, error) {
	return r.member(kindRemove, members...)
}

// Promote makes a member an admin (admins only).
func (r *Replica) Promote(member peer.ID) (Out, error) {
	return r.member(kindPromote, member)
}

// Leave removes this device from the conversation.
func (r *Replica) Leave() (Out, error) {
	return one(r.emit(&payload{Kind: kindLeave}))
}

// SetRetention sets how long messages are kept (admins only; 0 = forever).
func (r *Replica) SetRetention(d time.Duration) (Out, error) {
	return one(r.emit(&payload{Kind: kindRetention, Retention: int64(d / time.Second)}))
}

// SetPatient sets or corrects who the conversation is about (nil clears
// the link); any member may. It is a control op, sealed in the epoch the
// members hold now (a new one first if membership changed), so every
// member — and anyone added later, through history — reads it, and a
// removed member reads no correction made after its removal.
func (r *Replica) SetPatient(p *patient.Patient) (Out, error) {
	op := &payload{Kind: kindPatient}
	if p != nil {
		if err := p.Validate(); err != nil {
			return Out{}, fmt.Errorf("%w: %w", ErrInvalidPayload, err)
		}
		op.Patient = &patientBody{NHS: string(p.NHSNumber), Name: p.Name, Birth: p.BirthDate}
	}
	return r.do(op)
}

// member makes membership changes, then the new epoch they call for. It
// first checks that the epoch can be sealed to every member the change
// leaves (each has a current key): a change made and published whose
// epoch cannot follow would leave nobody able to send.
func (r *Replica) member(kind uint8, members ...peer.ID) (Out, error) {
	hv := r.headView()
	if !hv.admins[r.dev.ID] {
		return Out{}, fmt.Errorf("%w: only admins change members", ErrNotAuthorised)
	}
	after := maps.Clone(hv.members)
	for _, m := range members {
		switch kind {
		case kindAdd:
			after[m] = true
		case kindRemove:
			delete(after, m)
		}
	}
	if kind != kindPromote && after[r.dev.ID] {
		now := r.now()
		for m := range after {
			if m == r.dev.ID {
				continue
			}
			if _, err := r.dir.Recipient(m, now); err != nil {
				return Out{}, fmt.Errorf("no key to seal the next epoch to %s: %w", m, err)
			}
		}
	}
	var out Out
	for _, m := range members {
		o, err := one(r.emit(&payload{Kind: kind, Member: []byte(m)}))
		out.Merge(o)
		if err != nil {
			return out, err
		}
		if len(members) == 1 {
			out.ID = o.ID
		}
	}
	// Start the new epoch at once, so the change of who can read is not
	// left to the next message.
	w, err := r.prepare()
	out.Merge(w)
	if err != nil && !errors.Is(err, ErrNotMember) {
		return out, err
	}
	return out, nil
}

// one wraps a single envelope (published even alongside an error).
func one(raw []byte, err error) (Out, error) {
	var out Out
	out.add(raw)
	return out, err
}

// SendPhoto posts a photo (already re-encoded by the caller, metadata
// stripped) with its thumbnail and caption: the image travels in chunk ops
// of at most MaxChunk bytes, the photo op names them.
func (r *Replica) SendPhoto(image, thumb []byte, caption string) (Out, error) {
	if len(image) > MaxPhoto {
		return Out{}, fmt.Errorf("%w: photo of %d bytes (at most %d)", ErrTooLarge, len(image), MaxPhoto)
	}
	if len(thumb) > MaxChunk {
		return Out{}, fmt.Errorf("%w: thumbnail", ErrTooLarge)
	}
	var out Out
	p := &payload{Kind: kindPhoto, Data: thumb, Text: caption, Size: int64(len(image))}
	for off := 0; off < len(image); off += MaxChunk {
		chunk, err := r.do(&payload{Kind: kindChunk, Data: image[off:min(off+MaxChunk, len(image))]})
		out.Merge(chunk)
		if err != nil {
			return out, err // the chunks made so far are published; no photo op
		}
		p.Chunks = append(p.Chunks, slices.Clone(chunk.ID[:]))
	}
	photo, err := r.do(p)
	out.Merge(photo)
	out.ID = photo.ID
	return out, err
}
