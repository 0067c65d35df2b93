package mesh

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/fifo"
)

// Urgency (sync/6). Which ops are urgent is in the envelope's signed
// header (e2e.Envelope.Urgent), held by members to the decrypted payload
// (chat refuses an op whose bit and payload disagree), so every node
// moving an envelope knows it without reading it:
//
//   - a frame of envelopes to a site peer is paced ahead of routine frames
//     when every envelope in it is urgent (sites.go, urgentIn), and a
//     session with a site peer reconciles first the conversations an
//     urgent envelope came in for lately (urgentTagsFirst);
//   - a fetch brings up to urgentFirst urgent ops first, the newest of
//     those listed urgent, in a batch of their own (the listed keys carry
//     the bit: recon.go, needOrderAt; sync.go, fetch), then the missing
//     ancestors of the urgent ops that came (ancestors), then the rest in
//     causal order;
//   - a carrier hands urgent envelopes first within deliveries and within
//     copies, at most urgentBurst of each origin, and evicts them last
//     among the envelopes of the origin whose turn it is (carry.go); an
//     anchor's per-sender account evicts them last, within that sender's
//     share (anchor.go: the sync key orders an urgent op as the sender's
//     newest).
//
// Any member may mark any of its ops urgent, so urgency buys nothing
// beyond the sender's own share: a sender's urgent envelopes are paced
// first, and pull their ancestors forward, only within its allowance
// (urgentBurst ops at once, one more every urgentRefill; an envelope
// larger than maxUrgentSize never counts — an honest urgent op is a text
// message of at most 16 KiB, an escalation or an acknowledgement); past
// it they are routine. The allowance is charged once per op: the verdict
// on an op ID is kept and reused on every path, peer and resend
// (urgencyLedger.op). In a fetch, at most urgentFirst ops jump the queue
// whoever sent them, and one stamped more than urgentAhead ahead of the
// fetching device's clock does not. In a bag or an anchor, urgency
// reorders only a sender's own envelopes. An urgent op stamped more than
// urgentTagTTL before now is routine here, and charges nothing: a backlog
// caught up on, or old ops a site peer lists, never spend a colleague's
// allowance (red team 16).

// Allowance of urgent treatment per sender; how long a conversation an
// urgent envelope came in for goes first in sessions with site peers, and
// how many such conversations are remembered.
const (
	urgentTagTTL     = 5 * time.Minute
	maxUrgentTags    = 4096
	urgentBurst      = 8
	urgentRefill     = 4 * time.Second
	maxUrgentSize    = 32 << 10
	maxUrgentSenders = 4096
)

// urgentRaw reports whether encoded envelope raw is marked urgent in its
// signed header (false if it does not decode).
func urgentRaw(raw []byte) bool {
	e, err := e2e.Decode(raw)
	return err == nil && e.Urgent
}

// urgencyLedger is each sender's allowance of urgent treatment: a token
// bucket of urgentBurst, refilled one per urgentRefill, charged once per
// op — the verdict on an op ID is kept (the last maxUrgentVerdicts) and
// reused on every path, to every peer, on every resend. At most
// maxUrgentSenders are kept (then all start afresh: making senders takes
// certificates).
type urgencyLedger struct {
	mu       sync.Mutex
	by       map[peer.ID]*urgentBucket
	verdicts *fifo.Map[crdt.OpID, bool] // the last maxUrgentVerdicts; made on first use
}

type urgentBucket struct {
	tokens float64
	at     time.Time
}

// maxUrgentVerdicts is how many ops' urgency verdicts are remembered.
const maxUrgentVerdicts = 4096

// take spends one of sender's urgent treatments, if it has one left.
func (l *urgencyLedger) take(sender peer.ID, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.takeLocked(sender, now)
}

func (l *urgencyLedger) takeLocked(sender peer.ID, now time.Time) bool {
	if l.by == nil || len(l.by) >= maxUrgentSenders {
		l.by = map[peer.ID]*urgentBucket{}
	}
	b := l.by[sender]
	if b == nil {
		b = &urgentBucket{tokens: urgentBurst, at: now}
		l.by[sender] = b
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(urgentBurst, b.tokens+float64(d)/float64(urgentRefill))
	}
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// op reports whether op id of sender is within the sender's allowance:
// the first time it is asked, a treatment is spent (if one is left) and
// the verdict kept; after that, the kept verdict, free.
func (l *urgencyLedger) op(id crdt.OpID, sender peer.ID, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.verdicts == nil {
		l.verdicts = fifo.New[crdt.OpID, bool](maxUrgentVerdicts)
	}
	if v, ok := l.verdicts.Get(id); ok {
		return v
	}
	v := l.takeLocked(sender, now)
	l.verdicts.Put(id, v)
	return v
}

// urgentAllowed reports whether ce is to be treated as urgent here: marked
// so, small enough, and within its sender's allowance (decided once per
// op: urgencyLedger.op).
func (s *Service) urgentAllowed(ce Checked) bool {
	if !ce.Env.Urgent || len(ce.Raw) > maxUrgentSize || staleUrgent(ce.Env.Wall, s.now()) {
		return false
	}
	sender, err := ce.Env.SenderID()
	return err == nil && s.urgency.op(crdt.OpID(e2e.ID(ce.Raw)), sender, s.now())
}

// staleUrgent reports whether an op stamped wall (ms, the sender's clock)
// is too old to be treated as urgent at now.
func staleUrgent(wall int64, now time.Time) bool {
	return wall < now.Add(-urgentTagTTL).UnixMilli()
}

// ancestors is what one fetch brings forward: the ops urgent ops that came
// depend on, and theirs in turn.
type ancestors map[crdt.OpID]bool

// promote notes the dependencies of the urgent ops among got (within
// their senders' allowance: allowed) and of ancestors already noted, and
// returns rest (the IDs not yet asked for) with the noted ones first, each
// part in its order.
func (a *ancestors) promote(got []Checked, rest []crdt.OpID, allowed func(Checked) bool) []crdt.OpID {
	moved := false
	for _, ce := range got {
		noted := len(*a) > 0 && (*a)[crdt.OpID(e2e.ID(ce.Raw))]
		if !noted && !(ce.Env.Urgent && allowed(ce)) {
			continue
		}
		for _, d := range ce.Env.Deps {
			id, err := crdt.OpIDFromBytes(d)
			if err != nil || (*a)[id] {
				continue
			}
			if *a == nil {
				*a = ancestors{}
			}
			(*a)[id] = true
			moved = true
		}
	}
	if !moved || len(rest) == 0 {
		return rest
	}
	front := make([]crdt.OpID, 0, len(rest))
	var back []crdt.OpID
	for _, id := range rest {
		if (*a)[id] {
			front = append(front, id)
		} else {
			back = append(back, id)
		}
	}
	return append(front, back...)
}

// noteUrgentTagLocked notes that urgent envelope id of sender (its sync
// key, its size) came in for tag now, within the sender's allowance (the
// op's one verdict), on an anchor with site links, and reports whether it
// did (the caller then starts urgent sessions: urgentSites). Callers hold
// mu.
func (s *Service) noteUrgentTagLocked(tag []byte, id crdt.OpID, sender peer.ID, key uint64, size int, now time.Time) bool {
	if s.cfg.Links == nil || key&e2e.UrgentKey == 0 || size > maxUrgentSize || staleUrgent(e2e.KeyWall(key), now) ||
		!s.urgency.op(id, sender, now) {
		return false
	}
	if s.urgentTags == nil || len(s.urgentTags) >= maxUrgentTags {
		s.urgentTags = map[string]time.Time{}
	}
	s.urgentTags[string(tag)] = now
	return true
}

// urgentTagsFirst puts first, for a session with site peer p, the tags of
// tags an urgent envelope came in for within urgentTagTTL (each part in
// its order), forgetting older notes.
func (s *Service) urgentTagsFirst(p peer.ID, tags [][]byte) [][]byte {
	if !s.sitePeer(p) {
		return tags
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.urgentTags) == 0 {
		return tags
	}
	for t, at := range s.urgentTags {
		if now.Sub(at) > urgentTagTTL {
			delete(s.urgentTags, t)
		}
	}
	front := make([][]byte, 0, len(tags))
	var back [][]byte
	for _, t := range tags {
		if _, ok := s.urgentTags[string(t)]; ok {
			front = append(front, t)
		} else {
			back = append(back, t)
		}
	}
	return append(front, back...)
}
