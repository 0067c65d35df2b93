package chat

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// headView is the membership at this replica's heads: what it acts on.
func (r *Replica) headView() *membership {
	r.refresh()
	if r.heads == nil {
		r.heads = r.membersOf(r.union(r.dag.Heads()))
	}
	return r.heads
}

// rekey starts a new epoch for members and returns its welcome envelope.
func (r *Replica) rekey(members []peer.ID) ([]byte, error) {
	now := r.now()
	epoch, secret := e2e.NewEpoch()
	keys := e2e.EpochKeys{Conv: r.conv[:], Creator: []byte(r.creator), Secret: secret[:]}
	for ep, k := range r.control {
		keys.Control = append(keys.Control, e2e.ControlKeys{Epoch: slices.Clone(ep[:]), Key: slices.Clone(k[:])})
	}
	slices.SortFunc(keys.Control, func(a, b e2e.ControlKeys) int { return bytes.Compare(a.Epoch, b.Epoch) })
	members = uniq(members)
	slices.Sort(members)
	// Who already holds the epoch in use needs no history.
	var prev []peer.ID
	if len(r.dag.Heads()) > 0 {
		if ep := r.ops[r.headView().epoch]; ep != nil {
			prev = ep.holders
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
		rc.History = !slices.Contains(prev, m)
		to = append(to, rc)
	}
	body, err := e2e.SealWelcome(epoch, keys, members, to)
	if err != nil {
		return nil, err
	}
	env := r.newEnvelope()
	env.Kind, env.Epoch, env.Body = e2e.KindWelcome, epoch[:], body
	// Install our own keys before forgetting the secret.
	r.recv.Install(epoch, secret, members)
	r.send[epoch] = &e2e.SendChain{Epoch: epoch, CK: e2e.ChainKey(secret, r.dev.ID)}
	r.control[epoch] = e2e.ControlKey(secret)
	clear(secret[:])
	return r.finish(env)
}

func (r *Replica) newEnvelope() *e2e.Envelope {
	heads := r.dag.Heads()
	deps := make([][32]byte, len(heads))
	for i, h := range heads {
		deps[i] = h
	}
	e := e2e.New(r.tag, r.dev.ID, deps)
	t := r.clock.Now()
	e.Wall, e.Logical = t.Wall, t.Logical
	return e
}

// finish signs, encodes and applies our own envelope.
func (r *Replica) finish(e *e2e.Envelope) ([]byte, error) {
	if err := e.Sign(r.dev.Key); err != nil {
		return nil, err
	}
	raw, err := e.Encode()
	if err != nil {
		return nil, err
	}
	// Once applied locally the op is part of our DAG and must be published
	// whatever the error, or our later ops would wait on it forever.
	return raw, r.ingest(e, raw)
}

// emit seals and applies one op of ours, after checking it would be
// authorised: an op every other replica rejects is never sent.
func (r *Replica) emit(p *payload) ([]byte, error) {
	if err := r.permitted(p); err != nil {
		return nil, err
	}
	env, err := r.seal(p)
	if err != nil {
		return nil, err
	}
	return r.finish(env)
}

// permitted mirrors authorise for an op of ours at the current heads.
func (r *Replica) permitted(p *payload) error {
	m := r.headView()
	ok := false
	switch p.Kind {
	case kindCreate:
		ok = !m.created && r.creator == r.dev.ID
	case kindAdd, kindRemove, kindPromote, kindRetention:
		ok = m.admins[r.dev.ID]
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

// seal builds one op of ours in the epoch in use, unsigned and unapplied.
func (r *Replica) seal(p *payload) (*e2e.Envelope, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	pt, err := detcbor.Marshal(p)
	if err != nil {
		return nil, err
	}
	env := r.newEnvelope()
	m := r.headView()
	ep := r.ops[m.epoch]
	r.ownPayload = p
	if ep == nil {
		return nil, ErrNoKeys
	}
	if isControl(p.Kind) {
		key, ok := r.control[ep.epoch]
		if !ok {
			return nil, ErrNoKeys
		}
		if err := e2e.SealControl(env, ep.epoch, key, pt); err != nil {
			return nil, err
		}
	} else {
		chain := r.send[ep.epoch]
		if chain == nil {
			return nil, ErrNoKeys
		}
		if err := e2e.SealContent(env, chain, pt); err != nil {
			return nil, err
		}
	}
	return env, nil
}

// prepare makes sure the epoch in use reaches exactly the members, starting
// a new one if not (a removal, an add, or concurrent changes by two admins).
func (r *Replica) prepare() ([][]byte, error) {
	m := r.headView()
	if !m.members[r.dev.ID] {
		return nil, ErrNotMember
	}
	if ep := r.ops[m.epoch]; ep != nil && r.send[ep.epoch] != nil && sameSet(ep.holders, m.members) {
		return nil, nil
	}
	var members []peer.ID
	for id := range m.members {
		members = append(members, id)
	}
	w, err := r.rekey(members)
	if w == nil {
		return nil, err
	}
	return [][]byte{w}, err
}

func sameSet(a []peer.ID, b map[peer.ID]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !b[x] {
			return false
		}
	}
	return true
}

// do prepares the epoch and emits p, returning every envelope to publish.
func (r *Replica) do(p *payload) ([][]byte, crdt.OpID, error) {
	out, err := r.prepare()
	if err != nil {
		return nil, crdt.OpID{}, err
	}
	raw, err := r.emit(p)
	if raw == nil {
		return out, crdt.OpID{}, err
	}
	return append(out, raw), crdt.OpID(e2e.ID(raw)), err
}

// SendOptions qualify a message.
type SendOptions struct {
	Urgent  bool      // asks every recipient for an explicit acknowledgement
	ReplyTo crdt.OpID // zero for none
}

// Send posts a text message. It returns the envelopes to publish (a welcome
// first if a new epoch was needed) and the message's op ID.
func (r *Replica) Send(text string, o SendOptions) ([][]byte, crdt.OpID, error) {
	p := &payload{Kind: kindText, Text: text, Urgent: o.Urgent}
	if !o.ReplyTo.IsZero() {
		p.Target = o.ReplyTo[:]
	}
	return r.do(p)
}

// Edit replaces the text of one of this device's messages.
func (r *Replica) Edit(msg crdt.OpID, text string) ([][]byte, crdt.OpID, error) {
	return r.do(&payload{Kind: kindEdit, Target: msg[:], Text: text})
}

// Delete deletes one of this device's messages everywhere: the plaintext is
// destroyed, a tombstone stays.
func (r *Replica) Delete(msg crdt.OpID) ([][]byte, crdt.OpID, error) {
	return r.do(&payload{Kind: kindDelete, Target: msg[:]})
}

// React adds an emoji reaction to a message.
func (r *Replica) React(msg crdt.OpID, emoji string) ([][]byte, crdt.OpID, error) {
	if len(emoji) > maxEmojiText {
		return nil, crdt.OpID{}, ErrTooLarge
	}
	return r.do(&payload{Kind: kindReact, Target: msg[:], Text: emoji})
}

// Unreact removes this device's reaction (the tags it has observed).
func (r *Replica) Unreact(msg crdt.OpID, emoji string) ([][]byte, crdt.OpID, error) {
	p := &payload{Kind: kindUnreact, Target: msg[:], Text: emoji}
	for _, t := range r.reactionTags(msg, emoji, r.dev.ID) {
		p.Tags = append(p.Tags, t[:])
	}
	return r.do(p)
}

// Receipt records that this device has delivered, read or acknowledged
// messages. Receipts depend on everything seen, so they also endorse it.
func (r *Replica) Receipt(level int, msgs ...crdt.OpID) ([][]byte, crdt.OpID, error) {
	p := &payload{Kind: kindReceipt, Level: uint8(level)}
	for _, m := range msgs {
		p.Targets = append(p.Targets, m[:])
	}
	return r.do(p)
}

// Add adds a member (admins only); the next message goes in a new epoch.
func (r *Replica) Add(member peer.ID) ([][]byte, crdt.OpID, error) {
	return r.member(kindAdd, member)
}

// Remove removes a member (admins only); it receives no later epoch.
func (r *Replica) Remove(member peer.ID) ([][]byte, crdt.OpID, error) {
	return r.member(kindRemove, member)
}

// Promote makes a member an admin (admins only).
func (r *Replica) Promote(member peer.ID) ([][]byte, crdt.OpID, error) {
	return r.member(kindPromote, member)
}

// Leave removes this device from the conversation.
func (r *Replica) Leave() ([][]byte, crdt.OpID, error) {
	return one(r.emit(&payload{Kind: kindLeave}))
}

// SetRetention sets how long messages are kept (admins only; 0 = forever).
func (r *Replica) SetRetention(d time.Duration) ([][]byte, crdt.OpID, error) {
	return one(r.emit(&payload{Kind: kindRetention, Retention: int64(d / time.Second)}))
}

func (r *Replica) member(kind uint8, member peer.ID) ([][]byte, crdt.OpID, error) {
	if !r.headView().admins[r.dev.ID] {
		return nil, crdt.OpID{}, fmt.Errorf("%w: only admins change members", ErrNotAuthorised)
	}
	out, id, err := one(r.emit(&payload{Kind: kind, Member: []byte(member)}))
	if err != nil {
		return out, id, err
	}
	// Start the new epoch at once, so the change of who can read is not
	// left to the next message.
	w, err := r.prepare()
	out = append(out, w...)
	if err != nil && !errors.Is(err, ErrNotMember) {
		return out, id, err
	}
	return out, id, nil
}

// one wraps a single envelope (published even alongside an error).
func one(raw []byte, err error) ([][]byte, crdt.OpID, error) {
	if raw == nil {
		return nil, crdt.OpID{}, err
	}
	return [][]byte{raw}, crdt.OpID(e2e.ID(raw)), err
}

// SendPhoto posts a photo (already re-encoded by the caller, metadata
// stripped) with its thumbnail and caption: the image travels in chunk ops
// of at most MaxChunk bytes, the photo op names them.
func (r *Replica) SendPhoto(image, thumb []byte, caption string) ([][]byte, crdt.OpID, error) {
	if len(image) > MaxPhoto {
		return nil, crdt.OpID{}, fmt.Errorf("%w: photo of %d bytes (at most %d)", ErrTooLarge, len(image), MaxPhoto)
	}
	if len(thumb) > MaxChunk {
		return nil, crdt.OpID{}, fmt.Errorf("%w: thumbnail", ErrTooLarge)
	}
	var out [][]byte
	p := &payload{Kind: kindPhoto, Data: thumb, Text: caption, Size: int64(len(image))}
	for off := 0; off < len(image); off += MaxChunk {
		envs, id, err := r.do(&payload{Kind: kindChunk, Data: image[off:min(off+MaxChunk, len(image))]})
		out = append(out, envs...)
		if err != nil {
			return out, crdt.OpID{}, err
		}
		p.Chunks = append(p.Chunks, slices.Clone(id[:]))
	}
	envs, id, err := r.do(p)
	return append(out, envs...), id, err
}
