package mesh

import (
	"context"
	"encoding/hex"
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
}

type held struct {
	at   time.Time
	size int
}

type carriedRecord struct {
	At  int64  `cbor:"1,keyasint"`
	Raw []byte `cbor:"2,keyasint"`
}

func carrierKey(tag []byte) ds.Key { return ds.NewKey("/anchor").ChildString(hex.EncodeToString(tag)) }

func (c *carrier) list() []crdt.OpID {
	out := make([]crdt.OpID, 0, len(c.ops))
	for id := range c.ops {
		out = append(out, id)
	}
	return out
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

// carrier returns (creating and subscribing) the carrier of tag.
func (s *Service) carrier(tag []byte) *carrier { return s.carrierOn(tag, convTopic(tag)) }

// carrierOn returns the carrier of tag, subscribing to topic ("" for none).
func (s *Service) carrierOn(tag []byte, topic string) *carrier {
	key := hex.EncodeToString(tag)
	s.mu.Lock()
	if c := s.carried[key]; c != nil || s.convs[key] != nil {
		s.mu.Unlock()
		return c
	}
	c := &carrier{tag: slices.Clone(tag), ops: map[crdt.OpID]held{}}
	s.carried[key] = c
	s.tagList = nil
	s.mu.Unlock()
	if topic != "" {
		if err := s.subscribe(topic, tag); err != nil {
			s.log.Warn("anchor: subscribe", "err", err)
		}
	}
	return c
}

// carry stores a valid envelope for others, enforces quota and TTL oldest
// first, and acknowledges storage to a sender pushing it fresh.
func (s *Service) carry(tag []byte, e *e2e.Envelope, raw []byte, from peer.ID) {
	if len(tag) == 0 {
		tag = e.Tag
	}
	s.keep(s.carrier(tag), tag, e, raw, from)
}

// keep stores raw in carrier c.
func (s *Service) keep(c *carrier, tag []byte, e *e2e.Envelope, raw []byte, from peer.ID) {
	if c == nil {
		return
	}
	id := crdt.OpID(e2e.ID(raw))
	now := s.cfg.Now()
	s.mu.Lock()
	_, known := c.ops[id]
	if !known {
		rec, _ := detcbor.Marshal(carriedRecord{At: now.Unix(), Raw: raw})
		if err := s.cfg.Store.Put(s.ctx, carrierKey(tag).ChildString(id.String()), rec); err != nil {
			s.mu.Unlock()
			s.log.Error("anchor: store envelope", "err", err)
			return
		}
		s.holdLocked(c, id, held{at: now, size: len(raw)})
		s.changes++
		s.log.Debug("carrying envelope", "tag", hex.EncodeToString(tag), "op", id.String()[:12])
		s.enforceLocked(now)
	}
	s.mu.Unlock()
	if s.cfg.Observe != nil {
		s.cfg.Observe(id, from, known)
	}
	// Acknowledge storage to the sender when it is in reach: that is its
	// "held by another node".
	sender, _ := e.SenderID()
	if !known && sender != s.cfg.Node.ID() && s.cfg.Node.IsAdmitted(sender) && e.Kind == e2e.KindContent {
		s.goOwned(func() { s.ackHeld(sender, e.Tag, id) })
	}
}

// holdLocked records a carried envelope in c's index. Callers hold mu.
func (s *Service) holdLocked(c *carrier, id crdt.OpID, h held) {
	if old, ok := c.ops[id]; ok {
		s.carriedBytes -= int64(old.size)
	}
	c.ops[id] = h
	s.carriedBytes += int64(h.size)
	if s.oldestCarried.IsZero() || h.at.Before(s.oldestCarried) {
		s.oldestCarried = h.at
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
	dropped := 0
	for _, it := range all {
		if now.Sub(it.h.at) <= s.cfg.AnchorTTL && total <= s.cfg.AnchorQuota {
			break
		}
		delete(it.c.ops, it.id)
		s.cfg.Store.Delete(s.ctx, carrierKey(it.c.tag).ChildString(it.id.String()))
		total -= int64(it.h.size)
		dropped++
	}
	s.carriedBytes, s.oldestCarried = total, time.Time{}
	if dropped < len(all) {
		s.oldestCarried = all[dropped].h.at
	}
	if dropped > 0 {
		s.log.Warn("anchor: dropped oldest envelopes (quota or TTL)", "dropped", dropped, "bytes_held", total)
	}
}

// restoreCarried reloads the carried index on an anchor.
func (s *Service) restoreCarried() error {
	res, err := s.cfg.Store.Query(s.ctx, query.Query{Prefix: "/anchor"})
	if err != nil {
		return err
	}
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
		l := ds.RawKey(r.Key).List()
		if len(l) != 3 {
			continue
		}
		tag, err1 := hex.DecodeString(l[1])
		var id crdt.OpID
		var rec carriedRecord
		if err1 != nil || id.UnmarshalText([]byte(l[2])) != nil || detcbor.Unmarshal(r.Value, &rec, 2<<20) != nil {
			continue
		}
		topic := ""
		if s.cfg.Anchor {
			topic = convTopic(tag)
		}
		c := s.carrierOn(tag, topic)
		if c == nil {
			continue
		}
		s.mu.Lock()
		s.holdLocked(c, id, held{at: time.Unix(rec.At, 0), size: len(rec.Raw)})
		s.mu.Unlock()
	}
	return nil
}

// carryWelcome keeps a welcome we sealed in the recipient's inbox carrier,
// so sync hands it over whenever the two devices meet, even if the gossip
// push was missed (or the recipient was offline).
func (s *Service) carryWelcome(to peer.ID, e *e2e.Envelope, raw []byte) {
	tag := inboxTag(to)
	if c := s.carrierOn(tag, ""); c != nil {
		s.keep(c, tag, e, raw, s.cfg.Node.ID())
	}
}
