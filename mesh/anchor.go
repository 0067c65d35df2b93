package mesh

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// carrier holds the envelopes of one tag for others: ciphertext an anchor
// cannot read. The index is in memory; envelopes are in the store.
type carrier struct {
	tag []byte
	ops map[crdt.OpID]held
	// seen is when a peer last offered the tag or an envelope of it was
	// kept; a carrier holding nothing and unseen for the TTL goes (see
	// sweepCarriers). adopted: made for owner's offer, counted in
	// Service.adopted until it goes.
	seen    time.Time
	adopted bool
	owner   peer.ID
	sorted  []crdt.OpID // ops' IDs, sorted; nil when ops changed (see list)
	// spray: it holds envelopes handed to this device to carry (carry.go);
	// a device that is no anchor fetches nothing of such a tag.
	spray bool
	// senders is the per-sender account of everything s carries, shared
	// by all carriers of one Service (see sendersLocked).
	senders *ledger
}

type held struct {
	at     time.Time
	size   int
	sender peer.ID // from the envelope's signed header
	key    uint64  // its sync key (e2e.Envelope.SyncKey, urgency bit included; for our own welcomes without it)
}

type carriedRecord struct {
	At  int64  `cbor:"1,keyasint"`
	Raw []byte `cbor:"2,keyasint"`
	// Carried in the bag (carry.go): the copies left to hand on and
	// expiry (Unix seconds). Urgent is no longer written (the envelope's
	// signed header says it); read, and ignored, in older records.
	Spray  bool   `cbor:"3,keyasint,omitempty"`
	Copies uint32 `cbor:"4,keyasint,omitempty"`
	Urgent bool   `cbor:"5,keyasint,omitempty"`
	Exp    int64  `cbor:"6,keyasint,omitempty"`
}

// Per-sender share of an anchor's quota. Anchors hold ciphertext and
// cannot read membership, so any admitted device (a removed member, a
// device that never was one) can push valid envelopes for a tag; a sender
// may hold at most senderShare of the quota, its oldest dropped first, so
// that one sender can never evict another's envelopes. The share is
// AnchorQuota/16 (64 MiB of the default 1 GiB), at least 8 MiB, but never
// more than a quarter of a small quota.
const (
	senderShareDiv = 16
	senderShareMin = 8 << 20
)

// senderShare is the most carried bytes one sender may hold.
func (s *Service) senderShare() int64 {
	q := s.cfg.AnchorQuota
	return max(q/senderShareDiv, min(senderShareMin, q/4))
}

// ledger keeps running per-sender totals of carried envelopes, so bounding
// a sender costs nothing until it is over its share. It is guarded by
// Service.mu.
type ledger struct {
	by map[peer.ID]*account
}

// account is what one sender has carried. queue lists its envelopes
// oldest first by the sender's own signed clock (the causal key), not by
// arrival: an old envelope fetched late must not displace a newer one
// (and, once dropped, is not fetched again: refused.go). Entries whose
// envelope has since gone (TTL, global quota) are skipped when met and
// compacted away.
type account struct {
	bytes int64
	n     int
	queue []heldRef
}

type heldRef struct {
	c   *carrier
	id  crdt.OpID
	at  time.Time
	key uint64 // the envelope's causal key (e2e.Envelope.SyncKey)
}

// before orders refs by causal key, then ID.
func (r heldRef) before(o heldRef) int {
	if c := cmp.Compare(r.key, o.key); c != 0 {
		return c
	}
	return r.id.Compare(o.id)
}

// live reports whether r still names the envelope it was queued for.
func (r heldRef) live() (held, bool) {
	h, ok := r.c.ops[r.id]
	return h, ok && h.at.Equal(r.at)
}

func (l *ledger) add(c *carrier, id crdt.OpID, h held) {
	a := l.by[h.sender]
	if a == nil {
		a = &account{}
		l.by[h.sender] = a
	}
	a.bytes += int64(h.size)
	a.n++
	if len(a.queue) > 2*a.n+32 {
		a.queue = slices.DeleteFunc(a.queue, func(r heldRef) bool { _, ok := r.live(); return !ok })
	}
	r := heldRef{c, id, h.at, h.key}
	if n := len(a.queue); n == 0 || a.queue[n-1].before(r) <= 0 {
		a.queue = append(a.queue, r) // in order: the usual case
		return
	}
	i, _ := slices.BinarySearchFunc(a.queue, r, heldRef.before)
	a.queue = slices.Insert(a.queue, i, r)
}

func (l *ledger) release(h held) {
	a := l.by[h.sender]
	if a == nil {
		return
	}
	a.bytes -= int64(h.size)
	if a.n--; a.n <= 0 {
		delete(l.by, h.sender)
	}
}

func carrierKey(tag []byte) ds.Key { return ds.NewKey("/anchor").ChildString(hex.EncodeToString(tag)) }

// list returns the carried IDs, sorted (kept until the set changes: every
// sync session of the tag asks for them). The caller must not change it.
func (c *carrier) list() []crdt.OpID {
	if c.sorted == nil {
		c.sorted = make([]crdt.OpID, 0, len(c.ops))
		for id := range c.ops {
			c.sorted = append(c.sorted, id)
		}
		slices.SortFunc(c.sorted, crdt.OpID.Compare)
	}
	return c.sorted
}

func (c *carrier) get(ctx context.Context, d ds.Datastore, id crdt.OpID) ([]byte, bool) {
	if _, ok := c.ops[id]; !ok {
		return nil, false
	}
	b, err := d.Get(ctx, carrierKey(c.tag).ChildString(id.String()))
	if err != nil {
		return nil, false
	}
	var r carriedRecord
	if detcbor.Unmarshal(b, &r, 2<<20) != nil {
		return nil, false
	}
	return r.Raw, true
}

// sendersLocked returns the one per-sender ledger of s's carriers: every
// carrier points at it, and the first one made creates it. Callers hold mu.
func (s *Service) sendersLocked() *ledger {
	for _, c := range s.carried {
		if c.senders != nil {
			return c.senders
		}
	}
	return &ledger{by: map[peer.ID]*account{}}
}

// Adoption caps. An anchor carries the tags admitted peers offer — that is
// how it carries conversations it cannot read — but adopts at most
// maxAdoptPerPeer new tags from one offering peer (a device is in tens of
// conversations; 256 leaves room for a busy coordinator and its inbox) and
// maxAdoptTotal in all (64 peers at their cap): each costs a topic, an
// entry in every offer and memory. A tag another peer offers later is
// refreshed, not adopted again; a tag nobody has offered for the TTL and
// that holds no envelope goes, and its owner's count with it — so the tags
// of a peer since removed or revoked age out.
const (
	maxAdoptPerPeer = 256
	maxAdoptTotal   = 16384
)

func (s *Service) now() time.Time {
	if s.cfg.Now == nil {
		return time.Now()
	}
	return s.cfg.Now()
}

// accept adopts (on an anchor) the tags from offers that it does not hold
// or carry, within from's cap and the total, and refreshes the ones it
// carries. It returns how many it adopted.
func (s *Service) accept(tags [][]byte, from peer.ID) int {
	if !s.cfg.Anchor || len(tags) == 0 {
		return 0
	}
	own := s.h.Tags() // sorted; asked before taking mu
	self := inboxTag(s.cfg.Node.ID())
	now := s.now()
	var fresh []*carrier
	refused := 0
	s.mu.Lock()
	for _, t := range tags {
		if len(t) != tagLen || bytes.Equal(t, self) {
			continue
		}
		if _, ok := slices.BinarySearchFunc(own, t, bytes.Compare); ok {
			continue
		}
		key := hex.EncodeToString(t)
		if c := s.carried[key]; c != nil {
			c.seen = now
			continue
		}
		if s.adopted[from] >= maxAdoptPerPeer || s.adoptedTotal >= maxAdoptTotal {
			refused++
			continue
		}
		c := &carrier{tag: slices.Clone(t), ops: map[crdt.OpID]held{}, senders: s.sendersLocked(), seen: now, adopted: true, owner: from}
		s.carried[key] = c
		s.adopted[from]++
		s.adoptedTotal++
		fresh = append(fresh, c)
	}
	s.mu.Unlock()
	if refused > 0 {
		s.log.Warn("anchor: offered tags over the peer's cap not adopted", "remote", from.String(), "refused", refused, "cap", maxAdoptPerPeer)
	}
	for _, c := range fresh {
		if err := s.subscribe(convTopic(c.tag), c.tag); err != nil {
			s.log.Warn("anchor: subscribe", "err", err)
		}
	}
	return len(fresh)
}

// sweepCarriers drops the carriers that hold no envelope and that no peer
// has offered for the TTL, leaving their topics (unless the device has
// since joined the conversation). The topic handle and its validator stay
// registered, so a tag adopted again reuses them.
func (s *Service) sweepCarriers(now time.Time) {
	own := s.h.Tags()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireBagLocked(now)
	for key, c := range s.carried {
		if len(c.ops) > 0 || (now.Sub(c.seen) <= s.cfg.AnchorTTL && !c.spray) {
			continue
		}
		delete(s.carried, key)
		if c.adopted {
			if s.adopted[c.owner]--; s.adopted[c.owner] <= 0 {
				delete(s.adopted, c.owner)
			}
			s.adoptedTotal--
		}
		if _, ok := slices.BinarySearchFunc(own, c.tag, bytes.Compare); ok {
			continue
		}
		if sub := s.subs[convTopic(c.tag)]; sub != nil {
			sub.Cancel()
			delete(s.subs, convTopic(c.tag))
		}
	}
}

// carrier returns (creating and subscribing) the carrier of tag.
func (s *Service) carrier(tag []byte) *carrier { return s.carrierOn(tag, convTopic(tag)) }

// carrierOn returns the carrier of tag, subscribing to topic ("" for none).
func (s *Service) carrierOn(tag []byte, topic string) *carrier {
	key := hex.EncodeToString(tag)
	if s.holds(tag) {
		return nil // a conversation of ours: the holder keeps it
	}
	s.mu.Lock()
	if c := s.carried[key]; c != nil {
		s.mu.Unlock()
		return c
	}
	c := &carrier{tag: slices.Clone(tag), ops: map[crdt.OpID]held{}, senders: s.sendersLocked(), seen: s.now()}
	s.carried[key] = c
	s.mu.Unlock()
	if topic != "" {
		if err := s.subscribe(topic, tag); err != nil {
			s.log.Warn("anchor: subscribe", "err", err)
		}
	}
	return c
}

// carry stores a valid envelope for others, enforces the sender's share,
// quota and TTL oldest first, and acknowledges storage to a sender pushing
// it fresh.
func (s *Service) carry(tag []byte, e *e2e.Envelope, raw []byte, from peer.ID) {
	if len(tag) == 0 {
		tag = e.Tag
	}
	sender, _ := e.SenderID() // checked before; "" would share one account
	s.keep(s.carrier(tag), tag, raw, sender, e.Kind, e.SyncKey(), from)
}

// keep stores raw, of sender, kind and causal key, in carrier c.
func (s *Service) keep(c *carrier, tag []byte, raw []byte, sender peer.ID, kind uint8, key uint64, from peer.ID) {
	if c == nil {
		return
	}
	id := crdt.OpID(e2e.ID(raw))
	now := s.cfg.Now()
	s.mu.Lock()
	_, known := c.ops[id]
	// Dropped for room before (refused.go): an envelope fetched or pushed
	// again while the record holds would only displace another.
	known = known || s.refused.ids[hex.EncodeToString(tag)][id]
	kept, urgent := false, false
	if !known {
		rec, _ := detcbor.Marshal(carriedRecord{At: now.Unix(), Raw: raw})
		if err := s.cfg.Store.Put(s.ctx, carrierKey(tag).ChildString(id.String()), rec); err != nil {
			s.mu.Unlock()
			s.log.Error("anchor: store envelope", "err", err)
			return
		}
		s.holdLocked(c, id, held{at: now, size: len(raw), sender: sender, key: key})
		urgent = s.noteUrgentTagLocked(tag, id, sender, key, len(raw), now)
		c.seen = now
		s.changes++
		s.log.Debug("carrying envelope", "tag", hex.EncodeToString(tag), "op", id.String()[:12])
		s.boundSenderLocked(sender)
		s.enforceLocked(now)
		_, kept = c.ops[id]
	}
	s.mu.Unlock()
	if !known {
		s.kickSites()
	}
	if urgent {
		s.urgentSites(tag, id, from)
	}
	if s.cfg.Observe != nil {
		s.cfg.Observe(id, from, known)
	}
	// Acknowledge storage to the sender when it is in reach: that is its
	// "held by another node".
	if kept && sender != s.cfg.Node.ID() && s.cfg.Node.IsAdmitted(sender) && kind == e2e.KindContent {
		s.goOwned(func() { s.ackHeld(sender, tag, id) })
	}
}

// holdLocked records a carried envelope in c's index. Callers hold mu.
func (s *Service) holdLocked(c *carrier, id crdt.OpID, h held) {
	if c.senders == nil {
		c.senders = s.sendersLocked()
	}
	if old, ok := c.ops[id]; ok {
		s.carriedBytes -= int64(old.size)
		c.senders.release(old)
	} else {
		if s.copies == nil {
			s.copies = map[crdt.OpID]int{}
		}
		s.copies[id]++
	}
	c.ops[id] = h
	c.sorted = nil
	s.carriedBytes += int64(h.size)
	c.senders.add(c, id, h)
	if s.oldestCarried.IsZero() || h.at.Before(s.oldestCarried) {
		s.oldestCarried = h.at
	}
}

// dropLocked removes a carried envelope from c's index and the store; the
// running totals follow, except oldestCarried, which may stay earlier than
// what is held (enforceLocked then rescans once and corrects it). Callers
// hold mu.
func (s *Service) dropLocked(c *carrier, id crdt.OpID, h held) {
	if _, ok := c.ops[id]; ok {
		if s.copies[id]--; s.copies[id] <= 0 {
			delete(s.copies, id)
		}
	}
	delete(c.ops, id)
	c.sorted = nil
	s.unbagLocked(c, id)
	s.cfg.Store.Delete(s.ctx, carrierKey(c.tag).ChildString(id.String()))
	s.carriedBytes -= int64(h.size)
	if c.senders != nil {
		c.senders.release(h)
	}
}

// boundSenderLocked drops sender's oldest carried envelopes while it holds
// more than its share, logging what it drops. Callers hold mu.
func (s *Service) boundSenderLocked(sender peer.ID) {
	l := s.sendersLocked()
	a, share := l.by[sender], s.senderShare()
	if a == nil || a.bytes <= share {
		return
	}
	dropped := 0
	// Copies of an op also carried under another tag go first, newest
	// first: a colleague who replays another's envelopes under tags of its
	// own (sync answers it chose) evicts only its replays, never the first
	// copy of each.
	// The queue is in causal order, so a replay sits beside its first
	// copy: the first copy is the one kept earliest.
	first := map[crdt.OpID]heldRef{}
	for _, r := range a.queue {
		if h, ok := r.live(); ok && h.sender == sender && s.copies[r.id] > 1 {
			if f, seen := first[r.id]; !seen || r.at.Before(f.at) {
				first[r.id] = r
			}
		}
	}
	for i := len(a.queue) - 1; i >= 0 && a.bytes > share && len(first) > 0; i-- {
		r := a.queue[i]
		if f, ok := first[r.id]; ok && f.c == r.c {
			continue
		}
		if h, ok := r.live(); ok && h.sender == sender && s.copies[r.id] > 1 {
			s.dropLocked(r.c, r.id, h)
			s.refuseLocked(hex.EncodeToString(r.c.tag), r.id)
			dropped++
		}
	}
	for a.bytes > share && len(a.queue) > 0 {
		r := a.queue[0]
		a.queue = a.queue[1:]
		if h, ok := r.live(); ok && h.sender == sender {
			s.dropLocked(r.c, r.id, h)
			s.refuseLocked(hex.EncodeToString(r.c.tag), r.id)
			dropped++
		}
	}
	if dropped > 0 {
		s.log.Warn("anchor: dropped a sender's oldest envelopes (over its share)",
			"sender", sender.String(), "dropped", dropped, "sender_bytes", a.bytes, "share", share)
	}
}

// enforceLocked drops carried envelopes past their TTL, then the oldest
// while over quota, logging what it drops. Callers hold mu.
func (s *Service) enforceLocked(now time.Time) {
	if s.carriedBytes <= s.cfg.AnchorQuota && (s.oldestCarried.IsZero() || now.Sub(s.oldestCarried) <= s.cfg.AnchorTTL) {
		return
	}
	type item struct {
		c  *carrier
		id crdt.OpID
		h  held
	}
	var all []item
	var total int64
	for _, c := range s.carried {
		for id, h := range c.ops {
			all = append(all, item{c, id, h})
			total += int64(h.size)
		}
	}
	slices.SortFunc(all, func(a, b item) int { return a.h.at.Compare(b.h.at) })
	s.carriedBytes = total
	dropped := 0
	for _, it := range all {
		if now.Sub(it.h.at) <= s.cfg.AnchorTTL && s.carriedBytes <= s.cfg.AnchorQuota {
			break
		}
		s.dropLocked(it.c, it.id, it.h)
		s.refuseLocked(hex.EncodeToString(it.c.tag), it.id)
		dropped++
	}
	s.oldestCarried = time.Time{}
	if dropped < len(all) {
		s.oldestCarried = all[dropped].h.at
	}
	if dropped > 0 {
		s.log.Warn("anchor: dropped oldest envelopes (quota or TTL)", "dropped", dropped, "bytes_held", s.carriedBytes)
	}
}

// restoreCarried reloads the carried index on an anchor, with each
// sender's account (recomputed from the stored envelope), and applies the
// per-sender share, quota and TTL to what it finds.
func (s *Service) restoreCarried() error {
	res, err := s.cfg.Store.Query(s.ctx, query.Query{Prefix: "/anchor"})
	if err != nil {
		return err
	}
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
		tag, id, rec, sender, key, err := decodeCarried(r.Key, r.Value)
		if err != nil {
			s.log.Warn("anchor: stored envelope left aside", "err", err)
			continue
		}
		topic := ""
		if s.cfg.Anchor {
			topic = convTopic(tag)
		}
		if rec.Spray && (!s.carries() || !time.Unix(rec.Exp, 0).After(s.cfg.Now())) {
			// Carried for others, and carriage is off now or it expired.
			s.cfg.Store.Delete(s.ctx, ds.NewKey(r.Key))
			continue
		}
		c := s.carrierOn(tag, topic)
		if c == nil {
			continue
		}
		h := held{at: time.Unix(rec.At, 0), size: len(rec.Raw), sender: sender, key: key}
		s.mu.Lock()
		if rec.Spray {
			s.bagLocked(c, id, h, max(rec.Copies, 1), time.Unix(rec.Exp, 0))
		} else {
			s.holdLocked(c, id, h)
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.sendersLocked()
	for sender, a := range l.by {
		// The store lists envelopes by tag and ID: put each account's queue
		// in causal order once, then bound it.
		slices.SortFunc(a.queue, heldRef.before)
		s.boundSenderLocked(sender)
	}
	s.enforceLocked(s.cfg.Now())
	s.boundBagLocked()
	return nil
}

// decodeCarried parses one stored carried envelope: its key
// (/anchor/<hex tag>/<op ID>) and record. The op ID must be the hash of the
// envelope, the tag 16 bytes, the envelope well formed.
func decodeCarried(key string, value []byte) (tag []byte, id crdt.OpID, rec carriedRecord, sender peer.ID, syncKey uint64, err error) {
	l := ds.NewKey(key).List() // NewKey, not RawKey: a malformed key must not panic
	if len(l) != 3 || l[0] != "anchor" {
		return nil, id, rec, "", 0, fmt.Errorf("%w: key of %d parts", ErrStored, len(l))
	}
	if tag, err = hex.DecodeString(l[1]); err != nil || len(tag) != tagLen {
		return nil, id, rec, "", 0, fmt.Errorf("%w: tag", ErrStored)
	}
	if id.UnmarshalText([]byte(l[2])) != nil {
		return nil, id, rec, "", 0, fmt.Errorf("%w: op ID", ErrStored)
	}
	if err := detcbor.Unmarshal(value, &rec, 2<<20); err != nil {
		return nil, id, rec, "", 0, fmt.Errorf("%w: record: %v", ErrStored, err)
	}
	e, err := e2e.Decode(rec.Raw)
	if err != nil {
		return nil, id, rec, "", 0, fmt.Errorf("%w: envelope: %v", ErrStored, err)
	}
	if crdt.OpID(e2e.ID(rec.Raw)) != id {
		return nil, id, rec, "", 0, fmt.Errorf("%w: envelope is not op %s", ErrStored, id)
	}
	if sender, err = e.SenderID(); err != nil {
		return nil, id, rec, "", 0, fmt.Errorf("%w: sender", ErrStored)
	}
	return tag, id, rec, sender, e.SyncKey(), nil
}

// carryWelcome keeps a welcome we sealed in the recipient's inbox carrier,
// so sync hands it over whenever the two devices meet, even if the gossip
// push was missed (or the recipient was offline).
func (s *Service) carryWelcome(to peer.ID, raw []byte) {
	tag := inboxTag(to)
	if c := s.carrierOn(tag, ""); c != nil {
		// Keyed by its clock as every other holder orders it (reconciliation
		// ignores the urgency bit, which is left out here: our own welcome
		// opens no urgent session).
		var key uint64
		if e, err := e2e.Decode(raw); err == nil {
			key = e2e.CausalKey(e.SyncKey())
		}
		s.keep(c, tag, raw, s.cfg.Node.ID(), e2e.KindWelcome, key, s.cfg.Node.ID())
	}
}
