package mesh

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// Carriage by non-members (sync/5). An admitted device that carries
// (Config.Carry, not an anchor) keeps, in a small bag, sealed envelopes of
// conversations it is not in, and hands them over in the sync's hand
// phase: to a member (a peer offering the tag) or to an anchor (which
// adopts the tag from the carrier's offer), each envelope listed to each
// peer once, and taken if the peer lacks it. Who takes
// a copy is binary spray-and-wait, as the simulator chose
// (simulations/carry.go): the origin of an op starts with CarryCopies
// copies; a holder of n > 1 meeting a device that carries and lacks the
// envelope hands it n/2 and keeps the rest; a holder of one waits for a
// member or an anchor. The copy count travels beside the envelope in the
// hand phase, outside the signed envelope (a holder could lie about it:
// the taker caps it at its own CarryCopies). Copy counts, the bag's and
// our own ops', are stored and survive a restart (carrystore.go).
//
// Bounds, all enforced by the carrier: CarryQuota bytes in the bag; an
// envelope expires CarryTTL after the time in its signed header (a time
// in the future counts as now) and goes; one origin (the header's
// sender) holds at most CarryShare of the quota, its oldest dropped first;
// a full bag drops an envelope of the origin of its oldest one, whether
// urgent or not — that origin's oldest non-urgent envelope, its oldest
// urgent one only when all of its are urgent (urgent: the envelope's
// signed header says so, e2e.Envelope.Urgent; urgency reorders only an
// origin's own envelopes, so marking everything urgent keeps no more of
// one origin in the bag, and no longer). Only admitted peers sync at all; a sender
// the carrier does not know, or knows revoked, is refused, as gossip
// refuses it; a forged or misfiled envelope, or one not taken, counts
// against the peer that handed it. A carrier never fetches a tag it
// carries only: it takes what is handed to it, no more. It never holds a
// key: it stores and serves the envelope bytes as they came, and a member
// verifies the signature and the ID (the hash of the bytes) as from
// anyone.
//
// Honest states: an origin that handed an op to a carrier in a session
// learns in that session which ops the carrier kept, and records them as
// held by that device (Holder.Held): "held" then means that a colleague's
// device carries it, not that an anchor or a member has it. The origin
// learns nothing of copies handed on by carriers, of evictions, of
// expiry, or of the carrier meeting a member; only delivered receipts
// say the message arrived.

// Carriage defaults (the simulator's choice, simulations/carry.go).
const (
	DefaultCarryCopies = 8
	DefaultCarryQuota  = 1 << 20
	DefaultCarryTTL    = 7 * 24 * time.Hour
	DefaultCarryShare  = 0.25
)

// Hand phase limits: entries in a hand or take frame; envelopes per
// envelope frame (4 of at most e2e.MaxEnvelope fit a frame); the origin's
// own ops it keeps copies of to spray (the newest).
const (
	handLen   = tagLen + 32
	maxHand   = 1024
	handBatch = 4
	maxTokens = 4096
)

// bagItem is a carried envelope in the bag: kept for others, with the
// copies this device may still hand on.
type bagItem struct {
	c      *carrier
	id     crdt.OpID
	seq    uint64 // order kept: lower is older
	size   int
	sender peer.ID
	urgent bool
	copies uint32
	exp    time.Time
	listed listedTo
}

// listedTo are the peers an entry was listed to in a hand, and how: as a
// copy to carry (taken or not), as a delivery (declined, or kept). It is
// not listed to them again that way: an entry listed to a carrier is
// still delivered to it once it holds the tag. At most maxListed peers
// are kept.
type listedTo map[peer.ID]listedAs

// listedAs: how an entry was listed to a peer (bits).
type listedAs uint8

const (
	asCopy listedAs = 1 << iota
	asDelivery
)

const maxListed = 64

func (l *listedTo) add(p peer.ID, as listedAs) {
	if *l == nil {
		*l = listedTo{}
	}
	if _, ok := (*l)[p]; !ok && len(*l) >= maxListed {
		clear(*l)
	}
	(*l)[p] |= as
}

func (l listedTo) has(p peer.ID, as listedAs) bool { return l[p]&as != 0 }

// token is an op of ours with copies left to spray.
type token struct {
	tag    []byte
	id     crdt.OpID
	seq    uint64
	copies uint32
	urgent bool
	exp    time.Time
	listed listedTo
}

// carries reports whether this device carries for others (an anchor
// carries everything already and is handed nothing).
func (s *Service) carries() bool { return s.cfg.Carry && !s.cfg.Anchor }

// carriesOnly reports whether tag is one this device carries for others
// and does not hold: it fetches nothing of it in reconciliation.
func (s *Service) carriesOnly(tag []byte) bool {
	if s.cfg.Anchor {
		return false
	}
	s.mu.Lock()
	c := s.carried[hex.EncodeToString(tag)]
	spray := c != nil && c.spray
	s.mu.Unlock()
	return spray && !s.holds(tag)
}

// noteOwn gives ops this device made (and its welcomes, under the inboxes
// they go to) copies to spray.
func (s *Service) noteOwn(tag []byte, envs, welcomes [][]byte, inboxes []peer.ID) {
	if s.cfg.CarryCopies <= 1 {
		return
	}
	exp := s.now().Add(s.cfg.CarryTTL)
	s.mu.Lock()
	defer s.mu.Unlock()
	add := func(tag []byte, raw []byte) {
		if s.tokens == nil {
			s.tokens = map[string]*token{}
		}
		id := crdt.OpID(e2e.ID(raw))
		if s.tokens[handKey(tag, id)] != nil {
			return
		}
		s.seq++
		t := &token{tag: slices.Clone(tag), id: id, seq: s.seq, copies: uint32(s.cfg.CarryCopies), exp: exp, urgent: urgentRaw(raw)}
		s.tokens[handKey(tag, id)] = t
		s.saveTokenLocked(handKey(tag, id), t)
	}
	for _, to := range inboxes { // first: without its welcome, nothing else opens
		for _, raw := range welcomes {
			add(inboxTag(to), raw)
		}
	}
	for _, raw := range envs {
		add(tag, raw)
	}
	for len(s.tokens) > maxTokens {
		s.dropTokenLocked(s.oldestTokenLocked())
	}
}

// handCand is an envelope this device would hand a peer.
type handCand struct {
	tag    []byte
	id     crdt.OpID
	give   uint32
	urgent bool
	sender peer.ID // the envelope's origin
	seq    uint64
	// deliver: p holds the tag (its offer names it) or is an anchor — it
	// takes the envelope if it lacks it, and no copies change hands.
	deliver bool
}

func handKey(tag []byte, id crdt.OpID) string { return string(tag) + string(id[:]) }

// holdsTag reports whether offer o names tag as held (not carried only).
func (o offer) holdsTag(tag []byte) bool {
	_, ok := slices.BinarySearchFunc(o.tags, tag, bytes.Compare)
	return ok && !o.only[string(tag)]
}

// candidates lists what this device would hand p, given p's offer, each
// entry at most once to p: to an anchor, or to a peer holding the tag,
// what this device carries of it (sync/5: a member gets what a carrier
// carries of its conversations here, not by reconciliation); to p, our
// welcomes to it; to a peer that carries, our own ops and carried ones
// with copies to spare, of tags p does not hold. Deliveries first, then
// the rest; within each, urgent first (at most urgentBurst entries of each
// origin count as urgent), then oldest first; at most maxHand.
func (s *Service) candidates(p peer.ID, theirs offer, anchor bool) []handCand {
	now := s.now()
	s.mu.Lock()
	s.expireBagLocked(now)
	var out []handCand
	inbox := inboxTag(p)
	self := s.cfg.Node.ID() // tokens are our own ops
	for k, t := range s.tokens {
		if !t.exp.After(now) || t.copies <= 1 {
			s.dropTokenLocked(k)
			continue
		}
		switch {
		case bytes.Equal(t.tag, inbox): // our welcome to p itself
			if !t.listed.has(p, asDelivery) {
				out = append(out, handCand{tag: t.tag, id: t.id, give: 1, urgent: t.urgent, sender: self, seq: t.seq, deliver: true})
			}
		case theirs.carry && !theirs.holdsTag(t.tag) && !t.listed.has(p, asCopy):
			out = append(out, handCand{tag: t.tag, id: t.id, give: t.copies / 2, urgent: t.urgent, sender: self, seq: t.seq})
		}
	}
	for _, it := range s.bag {
		switch {
		case anchor || theirs.holdsTag(it.c.tag):
			if !it.listed.has(p, asDelivery) {
				out = append(out, handCand{tag: it.c.tag, id: it.id, give: 1, urgent: it.urgent, sender: it.sender, seq: it.seq, deliver: true})
			}
		case theirs.carry && it.copies > 1 && !it.listed.has(p, asCopy):
			out = append(out, handCand{tag: it.c.tag, id: it.id, give: it.copies / 2, urgent: it.urgent, sender: it.sender, seq: it.seq})
		}
	}
	s.mu.Unlock()
	// Urgency counts for at most urgentBurst entries of each origin (its
	// oldest), so that one origin's urgent flood does not fill the list.
	slices.SortFunc(out, func(a, b handCand) int { return cmp.Compare(a.seq, b.seq) })
	urgentOf := map[peer.ID]int{}
	for i := range out {
		if out[i].urgent {
			urgentOf[out[i].sender]++
			out[i].urgent = urgentOf[out[i].sender] <= urgentBurst
		}
	}
	slices.SortStableFunc(out, func(a, b handCand) int {
		if a.deliver != b.deliver {
			if a.deliver {
				return -1
			}
			return 1
		}
		if a.urgent != b.urgent {
			if a.urgent {
				return -1
			}
			return 1
		}
		return 0
	})
	return out[:min(len(out), maxHand)]
}

// handTo runs our side of handing peer p envelopes: a hand frame (empty
// unless we have something for p, see candidates), then — if p takes any
// — the envelopes, and p's word on what it kept. The copies handed are
// taken off ours (and stored) when p takes them, before the envelopes go,
// and given back for what p did not keep; our ops it kept are held by p
// (see Holder.Held).
func (s *Service) handTo(c *conn, p peer.ID, theirs offer) error {
	cands := s.candidates(p, theirs, s.isAnchor(p))
	f := frame{Kind: fHand}
	for _, x := range cands {
		f.Hand = append(f.Hand, append(slices.Clone(x.tag), x.id[:]...))
		f.Copies = append(f.Copies, x.give)
	}
	if err := c.send(f); err != nil || len(cands) == 0 {
		return err
	}
	byKey := make(map[string]handCand, len(cands))
	for _, x := range cands {
		byKey[handKey(x.tag, x.id)] = x
	}
	t, err := c.recv()
	if err != nil || t.Kind != fTake {
		return fmt.Errorf("%w: expected take", ErrProtocol)
	}
	taken, err := subset(t.Hand, byKey)
	if err != nil {
		return err
	}
	// Listed to p, not to be listed again: what it declined, and spray
	// copies it took (kept or not); a delivery once p has kept it — one it
	// refused (a sender it does not know yet) is listed again next time.
	delivering := map[string]bool{}
	for _, x := range taken {
		if x.deliver {
			delivering[handKey(x.tag, x.id)] = true
		}
	}
	s.listed(p, slices.DeleteFunc(slices.Clone(cands), func(x handCand) bool { return delivering[handKey(x.tag, x.id)] }))
	if len(taken) == 0 {
		return nil
	}
	debited := s.debit(taken)
	for i := 0; i < len(taken); i += handBatch {
		var envs [][]byte
		for _, x := range taken[i:min(i+handBatch, len(taken))] {
			if raw := s.envelopes(x.tag, [][]byte{x.id[:]}); len(raw) > 0 {
				envs = append(envs, raw[0])
			}
		}
		if err := c.send(frame{Kind: fEnvs, Envs: envs}); err != nil {
			return err
		}
	}
	k, err := c.recv()
	if err != nil || k.Kind != fTake {
		return fmt.Errorf("%w: expected kept", ErrProtocol)
	}
	keep := make(map[string]handCand, len(taken))
	for _, x := range taken {
		keep[handKey(x.tag, x.id)] = x
	}
	kept, err := subset(k.Hand, keep)
	if err != nil {
		return err
	}
	s.listed(p, slices.DeleteFunc(slices.Clone(kept), func(x handCand) bool { return !x.deliver }))
	s.handed(p, kept, debited)
	return nil
}

// subset maps hand entries to the candidates they name: each must be one
// of them, once.
func subset(entries [][]byte, of map[string]handCand) ([]handCand, error) {
	if len(entries) > len(of) {
		return nil, fmt.Errorf("%w: more entries than offered", ErrProtocol)
	}
	seen := make(map[string]bool, len(entries))
	out := make([]handCand, 0, len(entries))
	for _, h := range entries {
		x, ok := of[string(h)]
		if !ok || seen[string(h)] {
			return nil, fmt.Errorf("%w: an entry not offered", ErrProtocol)
		}
		seen[string(h)] = true
		out = append(out, x)
	}
	return out, nil
}

// listed records that cands were listed to p.
func (s *Service) listed(p peer.ID, cands []handCand) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range cands {
		k := handKey(x.tag, x.id)
		as := asCopy
		if x.deliver {
			as = asDelivery
		}
		if t := s.tokens[k]; t != nil {
			t.listed.add(p, as)
		} else if it := s.bag[k]; it != nil {
			it.listed.add(p, as)
		}
	}
}

// debit takes the copies of the spray entries p took off what this device
// may still hand, and stores the counts (a restart must not hand them
// again); it returns what it took off each, to give back what p does not
// keep (handed).
func (s *Service) debit(taken []handCand) map[string]uint32 {
	out := map[string]uint32{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range taken {
		if x.deliver {
			continue
		}
		k := handKey(x.tag, x.id)
		if t := s.tokens[k]; t != nil {
			n := min(x.give, t.copies)
			t.copies -= n
			out[k] = n
			s.saveTokenLocked(k, t)
		} else if it := s.bag[k]; it != nil {
			n := min(x.give, it.copies-1)
			it.copies -= n
			out[k] = n
			s.saveBagLocked(it)
		}
	}
	return out
}

// handed gives back the copies debited for what p did not keep, and
// records our own ops p kept as held by p.
func (s *Service) handed(p peer.ID, kept []handCand, debited map[string]uint32) {
	own := map[string][]crdt.OpID{}
	s.mu.Lock()
	for _, x := range kept {
		k := handKey(x.tag, x.id)
		if _, ok := debited[k]; ok {
			delete(debited, k)
			if s.tokens[k] != nil {
				own[string(x.tag)] = append(own[string(x.tag)], x.id)
			}
		}
	}
	for k, n := range debited {
		if t := s.tokens[k]; t != nil && n > 0 {
			t.copies += n
			s.saveTokenLocked(k, t)
		} else if it := s.bag[k]; it != nil && n > 0 {
			it.copies += n
			s.saveBagLocked(it)
		}
	}
	s.mu.Unlock()
	for tag, ids := range own {
		if s.holds([]byte(tag)) {
			s.h.Held([]byte(tag), ids, p)
		}
	}
}

// takeFrom runs our side of being handed envelopes by p: its hand frame
// (first, if read already), the entries we take, the envelopes, and the
// ones we kept. We take what we lack of a conversation we hold (or, as an
// anchor, of a tag we carry; or a welcome to our inbox), delivered as if
// fetched; and, if we carry, envelopes of others' conversations to carry
// on, with their copies.
func (s *Service) takeFrom(c *conn, p peer.ID, first *frame) error {
	var f frame
	if first != nil {
		f = *first
	} else {
		var err error
		if f, err = c.recv(); err != nil || f.Kind != fHand {
			return fmt.Errorf("%w: expected hand", ErrProtocol)
		}
	}
	if len(f.Hand) == 0 {
		return nil
	}
	type entry struct {
		tag     []byte
		copies  uint32
		deliver bool
	}
	want := map[crdt.OpID]entry{}
	var take [][]byte
	own := s.h.Tags()
	self := inboxTag(s.cfg.Node.ID())
	have := map[string][]crdt.OpID{} // per tag, what we hold of it (asked once)
	holdsOp := func(tag []byte, id crdt.OpID) bool {
		ids, ok := have[string(tag)]
		if !ok {
			ids = s.IDsOf(tag)
			have[string(tag)] = ids
		}
		_, found := slices.BinarySearchFunc(ids, id, crdt.OpID.Compare)
		return found
	}
	var welcomed map[crdt.OpID]bool // the ops of every conversation held: a welcome to us already in one
	for i, h := range f.Hand {
		tag, id := h[:tagLen], crdt.OpID(h[tagLen:])
		if _, dup := want[id]; dup {
			continue
		}
		_, mine := slices.BinarySearchFunc(own, tag, bytes.Compare)
		switch {
		case mine || (s.cfg.Anchor && s.carriesTag(tag)):
			if holdsOp(tag, id) || len(s.wanted(tag, []crdt.OpID{id})) == 0 { // held, or an anchor dropped it for room
				continue
			}
			want[id] = entry{tag: tag, deliver: true}
		case bytes.Equal(tag, self):
			if welcomed == nil {
				welcomed = map[crdt.OpID]bool{}
				for _, t := range own {
					for _, x := range s.IDsOf(t) {
						welcomed[x] = true
					}
				}
			}
			if welcomed[id] {
				continue
			}
			want[id] = entry{tag: tag, deliver: true}
		case s.carries():
			if s.carriesOp(id) {
				continue
			}
			want[id] = entry{tag: tag, copies: min(f.Copies[i], uint32(max(s.cfg.CarryCopies, 1)))}
		default:
			continue
		}
		take = append(take, h)
	}
	if err := c.send(frame{Kind: fTake, Hand: take}); err != nil || len(take) == 0 {
		return err
	}
	var got []Checked
	var tags [][]byte
	var total int64
	limit := 2*s.cfg.CarryQuota + e2e.MaxEnvelope
	for i := 0; i < len(take); i += handBatch {
		g, err := c.recv()
		if err != nil || g.Kind != fEnvs || len(g.Envs) > handBatch {
			return fmt.Errorf("%w: expected envelopes", ErrProtocol)
		}
		batch := map[crdt.OpID]bool{}
		for _, h := range take[i:min(i+handBatch, len(take))] {
			batch[crdt.OpID(h[tagLen:])] = true
		}
		var pending []*e2e.Envelope
		var raws [][]byte
		var ptags [][]byte
		for _, raw := range g.Envs {
			id := crdt.OpID(e2e.ID(raw))
			if !batch[id] {
				s.cfg.Node.Penalise(p)
				return fmt.Errorf("%w: an envelope not taken", ErrProtocol)
			}
			delete(batch, id)
			if total += int64(len(raw)); total > limit {
				return fmt.Errorf("%w: more than %d bytes handed", ErrBudget, limit)
			}
			w := want[id]
			e, err := e2e.Decode(raw)
			if err == nil && !bytes.Equal(e.Tag, w.tag) && !inboxOf(e, w.tag) {
				err = errMisfiled
			}
			if err == nil {
				// A member takes a revoked sender's ops as from any peer
				// (others may depend on them); a carrier refuses fresh
				// copies of them.
				err = s.checkSender(e, w.deliver && s.holds(w.tag))
			}
			if err != nil {
				s.log.Debug("carry: handed envelope refused", "from", p.String(), "err", err)
				continue
			}
			pending, raws, ptags = append(pending, e), append(raws, raw), append(ptags, w.tag)
		}
		for j, err := range e2e.VerifyBatch(pending) {
			if err != nil {
				s.cfg.Node.Penalise(p)
				s.log.Debug("carry: handed envelope refused", "from", p.String(), "err", err)
				continue
			}
			got, tags = append(got, Checked{pending[j], raws[j]}), append(tags, ptags[j])
		}
	}
	var kept [][]byte
	now := s.now()
	sprayed := false
	deliveries := map[string][]Checked{} // per tag, in the order handed
	var order []string
	for j, ce := range got {
		id := crdt.OpID(e2e.ID(ce.Raw))
		w := want[id]
		if w.deliver {
			if deliveries[string(tags[j])] == nil {
				order = append(order, string(tags[j]))
			}
			deliveries[string(tags[j])] = append(deliveries[string(tags[j])], ce)
		} else if !s.keepSpray(tags[j], ce.Env, ce.Raw, w.copies, now) {
			continue
		} else {
			sprayed = true
		}
		kept = append(kept, append(slices.Clone(tags[j]), id[:]...))
	}
	for _, tag := range order {
		s.deliver([]byte(tag), deliveries[tag], p)
	}
	if sprayed {
		s.log.Debug("carry: took envelopes to carry", "from", p.String(), "kept", len(kept))
		s.kick() // offer them on to whoever is in reach
	}
	return c.send(frame{Kind: fTake, Hand: kept})
}

// carriesTag reports whether this device carries tag (an anchor: adopted).
func (s *Service) carriesTag(tag []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.carried[hex.EncodeToString(tag)] != nil
}

// carriesOp reports whether any carrier here holds op id.
func (s *Service) carriesOp(id crdt.OpID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.copies[id] > 0
}

// keepSpray keeps a checked envelope of tag in the bag with the copies
// handed with it, then applies the bag's bounds; it reports whether the
// envelope is still kept.
func (s *Service) keepSpray(tag []byte, e *e2e.Envelope, raw []byte, copies uint32, now time.Time) bool {
	sender, err := e.SenderID()
	if err != nil {
		return false
	}
	wall := time.UnixMilli(e.Wall)
	if wall.After(now) {
		wall = now
	}
	exp := wall.Add(s.cfg.CarryTTL)
	if !exp.After(now) {
		return false
	}
	c := s.carrierOn(tag, "")
	if c == nil {
		return false
	}
	id := crdt.OpID(e2e.ID(raw))
	rec, _ := detcbor.Marshal(carriedRecord{At: now.Unix(), Raw: raw, Spray: true, Copies: max(copies, 1), Exp: exp.Unix()})
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := c.ops[id]; ok {
		return false
	}
	if err := s.cfg.Store.Put(s.ctx, carrierKey(tag).ChildString(id.String()), rec); err != nil {
		s.log.Error("carry: store envelope", "err", err)
		return false
	}
	s.bagLocked(c, id, held{at: now, size: len(raw), sender: sender, key: e.SyncKey()}, max(copies, 1), exp)
	s.changes++
	s.boundBagLocked()
	_, kept := s.bag[handKey(tag, id)]
	return kept
}

// bagLocked records a carried envelope in c's index and the bag. Callers
// hold mu.
func (s *Service) bagLocked(c *carrier, id crdt.OpID, h held, copies uint32, exp time.Time) {
	if s.bag == nil {
		s.bag = map[string]*bagItem{}
	}
	c.spray = true
	s.holdLocked(c, id, h)
	s.seq++
	s.bag[handKey(c.tag, id)] = &bagItem{c: c, id: id, seq: s.seq, size: h.size, sender: h.sender, urgent: h.key&e2e.UrgentKey != 0, copies: copies, exp: exp}
	s.bagBytes += int64(h.size)
}

// unbagLocked forgets a bag entry when its envelope goes. Callers hold mu.
func (s *Service) unbagLocked(c *carrier, id crdt.OpID) {
	if it := s.bag[handKey(c.tag, id)]; it != nil && it.c == c {
		delete(s.bag, handKey(c.tag, id))
		s.bagBytes -= int64(it.size)
	}
}

// dropBagLocked drops bag entry k with its envelope. Callers hold mu.
func (s *Service) dropBagLocked(k string) {
	it := s.bag[k]
	if it == nil {
		return
	}
	if h, ok := it.c.ops[it.id]; ok {
		s.dropLocked(it.c, it.id, h)
	}
	s.unbagLocked(it.c, it.id)
}

// carryShare is the most bytes of one origin the bag holds.
func (s *Service) carryShare() int64 { return int64(float64(s.cfg.CarryQuota) * s.cfg.CarryShare) }

// boundBagLocked applies the per-origin share, then the quota: the origin
// of the oldest entry loses one, whether urgent or not (so one origin's
// urgent flood never outlasts others' newer routine envelopes), its oldest
// non-urgent one, or its oldest urgent one when all of its are urgent.
// Callers hold mu.
func (s *Service) boundBagLocked() {
	by := map[peer.ID]int64{}
	for _, it := range s.bag {
		by[it.sender] += int64(it.size)
	}
	share, dropped := s.carryShare(), 0
	for sender, n := range by {
		for n > share {
			id, ok := s.oldestLocked(func(it *bagItem) bool { return it.sender == sender })
			if !ok {
				break
			}
			n -= int64(s.bag[id].size)
			s.dropBagLocked(id)
			dropped++
		}
	}
	for s.bagBytes > s.cfg.CarryQuota && len(s.bag) > 0 {
		// Whose envelope goes ignores urgency (the oldest entry's origin);
		// urgency only picks which of that origin's goes.
		oldest, _ := s.oldestLocked(func(*bagItem) bool { return true })
		sender := s.bag[oldest].sender
		id, ok := s.oldestLocked(func(it *bagItem) bool { return it.sender == sender && !it.urgent })
		if !ok {
			id = oldest
		}
		s.dropBagLocked(id)
		dropped++
	}
	if dropped > 0 {
		s.log.Info("carry: dropped carried envelopes (origin share or quota)", "dropped", dropped, "bytes", s.bagBytes)
	}
}

// oldestLocked is the oldest bag entry that ok accepts.
func (s *Service) oldestLocked(ok func(*bagItem) bool) (string, bool) {
	var out string
	var at uint64
	for id, it := range s.bag {
		if ok(it) && (at == 0 || it.seq < at) {
			out, at = id, it.seq
		}
	}
	return out, at != 0
}

// expireBagLocked drops bag entries past their time. Callers hold mu.
func (s *Service) expireBagLocked(now time.Time) {
	for id, it := range s.bag {
		if !it.exp.After(now) {
			s.dropBagLocked(id)
		}
	}
}

// absorb hands the holder what this device carried of tag for others,
// now that it holds the conversation (a welcome just named it): the
// envelopes leave the bag for the replica. Without this, reconciliation
// would count them as held while the replica lacks them. They were
// checked when taken.
func (s *Service) absorb(tag []byte) {
	s.mu.Lock()
	c := s.carried[hex.EncodeToString(tag)]
	var raws [][]byte
	if c != nil && c.spray {
		for id, h := range c.ops {
			if raw, ok := c.get(s.ctx, s.cfg.Store, id); ok {
				raws = append(raws, raw)
			}
			if _, bagged := s.bag[handKey(tag, id)]; bagged {
				s.dropLocked(c, id, h)
			}
		}
	}
	s.mu.Unlock()
	var out []Checked
	for _, raw := range raws {
		if e, err := e2e.Decode(raw); err == nil && bytes.Equal(e.Tag, tag) {
			out = append(out, Checked{e, raw})
		}
	}
	if len(out) > 0 {
		s.log.Debug("carry: joined a conversation carried, envelopes to the replica", "n", len(out))
		s.h.Deliver(tag, out, s.cfg.Node.ID())
	}
}

// carriedOnly lists the tags this device carries only: their envelopes
// were handed to it and it does not hold the conversation. What it carried
// of a conversation it holds by now (joined after it took them) goes to
// the replica first (see absorb).
func (s *Service) carriedOnly() map[string]bool {
	own := s.h.Tags()
	s.mu.Lock()
	var joined [][]byte
	for _, c := range s.carried {
		if _, held := slices.BinarySearchFunc(own, c.tag, bytes.Compare); held && c.spray && len(c.ops) > 0 {
			joined = append(joined, c.tag)
		}
	}
	s.mu.Unlock()
	for _, tag := range joined {
		s.absorb(tag)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out map[string]bool
	for _, c := range s.carried {
		if !c.spray || s.cfg.Anchor {
			continue
		}
		if _, held := slices.BinarySearchFunc(own, c.tag, bytes.Compare); held {
			continue
		}
		if out == nil {
			out = map[string]bool{}
		}
		out[string(c.tag)] = true
	}
	return out
}

// skipCarried drops from common the tags either side carries only: what
// a carrier carries of a member's tag (or for an anchor) goes in the hand
// phase, listed to each peer once, and a carrier fetches nothing
// (sync/5). Reconciling them cost a carrier's every new envelope a
// reconciliation listing the members' IDs; with a non-anchor, a carrier
// does not even offer them (offer).
func skipCarried(common [][]byte, mine, theirs offer) [][]byte {
	if len(mine.only) == 0 && len(theirs.only) == 0 {
		return common
	}
	return slices.DeleteFunc(common, func(tag []byte) bool {
		return mine.only[string(tag)] || theirs.only[string(tag)]
	})
}
