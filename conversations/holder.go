package conversations

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/mesh"
)

// The mesh moves envelopes; these methods (mesh.Holder) are what it asks
// of the conversations this device holds.
var _ mesh.SortedHolder = (*Service)(nil)

// Tags lists the tags of the conversations this device holds.
func (s *Service) Tags() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tagList == nil {
		out := make([][]byte, 0, len(s.convs))
		for _, c := range s.convs {
			out = append(out, c.tag)
		}
		slices.SortFunc(out, bytes.Compare)
		s.tagList = out
	}
	return s.tagList
}

// IDs is the op-ID set of a conversation this device holds (nil if none).
func (s *Service) IDs(tag []byte) []crdt.OpID {
	c := s.byTag(tag)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.r.IDs()
}

// SortedIDs is IDs, sorted and shared with the replica (mesh reads it for
// every sync session without a copy of the whole set): callers must not
// modify it.
func (s *Service) SortedIDs(tag []byte) []crdt.OpID {
	c := s.byTag(tag)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.r.SortedIDs()
}

// Has reports whether op id of conversation tag is among the ops this
// device applied recently (see recent): the mesh then neither verifies
// nor delivers a copy of it. It does not wait on the conversation's lock.
func (s *Service) Has(tag []byte, id crdt.OpID) bool {
	c := s.byTag(tag)
	return c != nil && c.recent.has(id)
}

// Keys gives the causal keys of ops of a conversation this device holds
// (nil if none), which sync lists with their IDs.
func (s *Service) Keys(tag []byte, ids []crdt.OpID) []uint64 {
	c := s.byTag(tag)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.r.SyncKeys(ids)
}

// Envelopes returns the envelopes among ids of a conversation this device
// holds, in causal order, so the peer applies them with little buffering.
func (s *Service) Envelopes(tag []byte, ids []crdt.OpID) [][]byte {
	c := s.byTag(tag)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.r.SortCausal(ids)
	out := make([][]byte, 0, len(ids))
	for _, id := range ids {
		if raw, ok := c.r.Envelope(id); ok {
			out = append(out, raw)
		}
	}
	return out
}

// Held records that by acknowledged storing ops of ours.
func (s *Service) Held(tag []byte, ids []crdt.OpID, by peer.ID) {
	c := s.byTag(tag)
	if c == nil {
		return
	}
	c.mu.Lock()
	for _, id := range ids {
		c.r.MarkHeld(id, by)
	}
	conv := c.r.ID()
	c.mu.Unlock()
	if !conv.IsZero() {
		s.events.emit(Event{Kind: EventState, Conversation: conv, Ops: ids})
	}
}

// Deliver applies envelopes of one conversation that the mesh checked
// (decoded, signed, sent by known staff), joining the conversation when a
// welcome names this device. It reports whether this device holds the
// conversation; if not, the mesh may carry the envelopes for others.
func (s *Service) Deliver(tag []byte, envs []mesh.Checked, from peer.ID) bool {
	c := s.byTag(tag)
	if c == nil {
		if c = s.join(tag, envs); c == nil {
			return false
		}
	}
	s.receive(c, envs, from)
	return true
}

// MaxUnopened bounds the conversations joined on a welcome that has not
// opened yet (its history on its way, or a share that does not open): each
// costs a topic, a sync offer entry and memory, and any colleague can seal
// a welcome to anyone.
const MaxUnopened = 64

// MaxUnopenedPerSender bounds the unopened conversations joined on one
// sender's welcomes, so one colleague's welcomes whose history never comes
// cannot fill MaxUnopened and lock everyone else's invitations out.
const MaxUnopenedPerSender = MaxUnopened / 8

// Joins per welcome sender. Any colleague can seal a welcome to anyone, and
// a member who is admin of its own conversations can make as many as it
// likes, each of which opens: every one joined costs this device a topic,
// an entry in every sync offer and memory. A device joins at most
// MaxJoinsPerSender conversations on the welcomes of one sender in any
// JoinWindow. A refused welcome is not lost: the sender's device keeps it
// for this device's inbox and sync hands it over again, so the join is
// late, not dropped. 32 an hour is far beyond a colleague starting
// conversations by hand (a coordinator opening one per patient at
// handover included); the window lives in memory, and restarts with the
// device.
const (
	MaxJoinsPerSender = 32
	JoinWindow        = time.Hour
)

// sealedWelcome returns the sender of a welcome among envs with a share
// sealed to this device.
func (s *Service) sealedWelcome(envs []mesh.Checked) (peer.ID, bool) {
	self := s.cfg.Device.ID
	for _, ce := range envs {
		if ce.Env.Kind != e2e.KindWelcome {
			continue
		}
		w, err := e2e.DecodeWelcome(ce.Env.Body)
		if err != nil || !slices.ContainsFunc(w.Seals, func(sl e2e.Seal) bool { return peer.ID(sl.Recipient) == self }) {
			continue
		}
		if sender, err := ce.Env.SenderID(); err == nil {
			return sender, true
		}
	}
	return "", false
}

// admitJoinLocked records a join on sender's welcome, or reports that
// sender is at its bound for the window. Callers hold s.mu.
func (s *Service) admitJoinLocked(sender peer.ID, now time.Time) bool {
	if s.joins == nil {
		s.joins = map[peer.ID][]time.Time{}
	}
	recent := slices.DeleteFunc(s.joins[sender], func(at time.Time) bool { return now.Sub(at) >= JoinWindow })
	if len(recent) >= MaxJoinsPerSender {
		s.joins[sender] = recent
		return false
	}
	s.joins[sender] = append(recent, now)
	if len(s.joins) > 1024 { // forget senders whose window has passed
		for p, ats := range s.joins {
			if len(ats) == 0 || now.Sub(ats[len(ats)-1]) >= JoinWindow {
				delete(s.joins, p)
			}
		}
	}
	return true
}

// join starts a replica for a conversation one of envs welcomes us into:
// one with a share sealed to this device, from a sender within its bound
// of joins.
func (s *Service) join(tag []byte, envs []mesh.Checked) *conv {
	sender, sealed := s.sealedWelcome(envs)
	if !sealed {
		return nil // a welcome that merely names us holds nothing for us
	}
	if s.foreign(sender) && (s.cfg.Invites == nil || !s.cfg.Invites(sender)) {
		s.log.Warn("welcome refused: our federation record does not let that trust invite us", "sender", sender.String())
		return nil
	}
	if s.foreign(sender) && !s.creatorWelcome(envs, sender) {
		s.log.Warn("welcome refused: a device of another trust welcomes us only into a conversation it created", "sender", sender.String())
		return nil
	}
	// Check and insert under one lock: the welcome may arrive by gossip on
	// the inbox and by sync at once, and two replicas of one conversation
	// would each take half of it.
	s.mu.Lock()
	defer s.mu.Unlock()
	key := hex.EncodeToString(tag)
	if c := s.convs[key]; c != nil {
		return c
	}
	if s.unopened >= MaxUnopened {
		s.log.Warn("welcome refused: too many conversations not yet opened", "tag", key)
		return nil
	}
	if s.unopenedBy[sender] >= MaxUnopenedPerSender {
		s.log.Warn("welcome deferred: its sender has too many conversations here not yet opened", "sender", sender.String(),
			"bound", MaxUnopenedPerSender)
		return nil
	}
	if !s.admitJoinLocked(sender, s.cfg.Now()) {
		s.log.Warn("welcome deferred: its sender is at its bound of conversations joined", "sender", sender.String(),
			"bound", MaxJoinsPerSender, "window", JoinWindow.String())
		return nil
	}
	s.unopened++
	if s.unopenedBy == nil {
		s.unopenedBy = map[peer.ID]int{}
	}
	s.unopenedBy[sender]++
	j := newJournal(s.cfg.Store)
	c := &conv{r: chat.Join(s.cfg.Device, s.cfg.Directory, tag, s.opts(tag, j)...), tag: slices.Clone(tag), j: j, joined: true, joinedBy: sender}
	if s.cfg.Revoked != nil {
		c.r.SetRevoked(s.cfg.Revoked)
	}
	s.convs[key] = c
	s.tagList = nil
	return c
}

// receive applies a batch of checked envelopes, then acknowledges delivery
// and persists once for the batch: the ops go to the store in one batch
// with the key record (and the receipts, which are ours: then synced).
func (s *Service) receive(c *conv, envs []mesh.Checked, from peer.ID) {
	c.mu.Lock()
	if !c.r.ID().IsZero() {
		// Opened: persist saves what the batch wrote. (A conversation not
		// yet opened has no key record to save with; its ops go straight
		// to the store.)
		c.j.hold()
	}
	var before map[peer.ID]bool // members before, for the audit trail
	if s.cfg.Audit != nil && !c.r.ID().IsZero() {
		if before = c.r.MemberSet(); len(before) == 0 {
			before = nil // membership not readable yet: nothing to compare
		}
	}
	var applied []crdt.OpID
	var dups []bool
	for _, ce := range envs {
		err := c.r.ReceiveVerified(ce.Env, ce.Raw)
		dup := errors.Is(err, crdt.ErrDuplicate)
		dups = append(dups, dup)
		if dup {
			continue
		}
		id := crdt.OpID(e2e.ID(ce.Raw))
		applied = append(applied, id)
		if c.r.Has(id) {
			c.recent.add(id)
		}
		switch {
		case errors.Is(err, chat.ErrNotAuthorised):
			s.log.Debug("op refused", "from", from.String(), "err", err)
		case err != nil:
			s.log.Warn("op not applied cleanly", "from", from.String(), "err", err)
		}
	}
	if len(applied) == 0 {
		if c.j.held() {
			s.persist(c)
		} else {
			c.j.end()
		}
		c.mu.Unlock()
		s.observe(envs, from, dups)
		return
	}
	first := false
	if id := c.r.ID(); !id.IsZero() {
		s.mu.Lock()
		if s.byID[id] == nil {
			s.byID[id], first = c, true
			if c.joined {
				s.unopened--
				if s.unopenedBy[c.joinedBy]--; s.unopenedBy[c.joinedBy] <= 0 {
					delete(s.unopenedBy, c.joinedBy)
				}
			}
		}
		s.mu.Unlock()
	}
	// The ops of others above are held by the journal, to be written with
	// no fsync of their own; receipts (and a welcome they may need) are
	// ours: persist writes all in one batch and makes it durable, one sync
	// for the batch, before they are published. A receipt is made now only
	// if no receipt window is open (ReceiptWindow); else the window's end
	// makes one for all.
	c.j.begin()
	out := s.heal(c)
	out.Merge(s.autoReceipts(c))
	saved := s.persist(c) == nil
	id := c.r.ID()
	evs := s.auditOps(c, c.r.TakeApplied(), false, before)
	c.mu.Unlock()
	s.observe(envs, from, dups)
	s.record(evs...)
	if saved {
		s.publishReceipts(c, out)
	}
	if first {
		s.events.emit(Event{Kind: EventConversation, Conversation: id})
	}
	if !id.IsZero() {
		s.events.emit(Event{Kind: EventMessage, Conversation: id, Ops: applied})
	}
}

// heal rekeys if concurrent membership changes left no epoch in use and
// this device is the one to do it (chat.Replica.Heal), so a member added
// concurrently with another admin's rekey can read that epoch's control
// ops without waiting for someone to send. Callers hold c.mu, in a journal
// transaction.
func (s *Service) heal(c *conv) chat.Out {
	if c.r.ID().IsZero() {
		return chat.Out{}
	}
	out, err := c.r.Heal()
	if err != nil {
		s.log.Debug("could not rekey after concurrent membership changes", "err", err)
	}
	return out
}

func (s *Service) observe(envs []mesh.Checked, from peer.ID, dups []bool) {
	if s.cfg.Observe == nil {
		return
	}
	for i, ce := range envs {
		s.cfg.Observe(crdt.OpID(e2e.ID(ce.Raw)), from, dups[i])
	}
}

// Revoke re-applies the revocation predicate on every conversation, after
// a new CRL: ops of a revoked sender that no unrevoked member depends on
// stop standing. Where this device is an admin it also removes revoked
// members, so the next epoch is sealed to colleagues only (a welcome must
// reach exactly the members, and no new key goes to a revoked device).
func (s *Service) Revoke() {
	if s.cfg.Revoked == nil {
		return
	}
	for _, c := range s.all() {
		c.mu.Lock()
		c.r.SetRevoked(s.cfg.Revoked)
		id := c.r.ID()
		var gone []peer.ID
		if st := c.r.State(); slices.Contains(st.Admins, s.cfg.Device.ID) {
			for _, m := range st.Members {
				if m != s.cfg.Device.ID && s.cfg.Revoked(m) {
					gone = append(gone, m)
				}
			}
		}
		c.mu.Unlock()
		if id.IsZero() {
			continue
		}
		s.events.emit(Event{Kind: EventMessage, Conversation: id})
		if len(gone) > 0 {
			// All at once: a new epoch must reach exactly the members, and
			// none can be sealed to a revoked one.
			if _, err := s.do(id, func(r *chat.Replica) (chat.Out, error) { return r.Remove(gone...) }); err != nil {
				s.log.Warn("remove revoked members", "conversation", id.String(), "members", len(gone), "err", err)
			}
		}
	}
}

// Expire applies retention and key expiry on every conversation (see
// chat.Replica.Expire) and persists what it dropped. It returns how many
// messages retention deleted.
func (s *Service) Expire(now time.Time) (int, error) {
	n := 0
	var errs []error
	for _, c := range s.all() {
		c.mu.Lock()
		gone := c.r.Expire(now)
		err := s.persist(c)
		id := c.r.ID()
		c.mu.Unlock()
		n += gone
		if err == nil && gone > 0 {
			err = s.cfg.Store.Sync(context.Background(), convKey(c.tag)) // deletions survive a crash
		}
		if err != nil {
			errs = append(errs, err)
		}
		if gone > 0 && !id.IsZero() {
			s.events.emit(Event{Kind: EventMessage, Conversation: id})
		}
	}
	return n, errors.Join(errs...)
}
