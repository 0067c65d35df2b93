package chat

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/patient"
)

// Delivery states, least to most advanced.
const (
	StateQueued       = "queued"       // on this device only
	StateHeld         = "held"         // another node (anchor, carrier) acknowledged storing it
	StateDelivered    = "delivered"    // on the recipient's device
	StateRead         = "read"         //
	StateAcknowledged = "acknowledged" // explicitly acknowledged (urgent messages)
)

var levelState = []string{StateQueued, StateDelivered, StateRead, StateAcknowledged}

// Message is one materialised message.
type Message struct {
	ID      crdt.OpID
	Sender  peer.ID
	Text    string // empty once deleted
	Time    time.Time
	Urgent  bool
	ReplyTo crdt.OpID
	Edited  bool
	Deleted bool
	Skewed  bool // sender's clock was far ahead when it arrived
	// Withdrawn says why a message this device showed no longer stands
	// (its sender was removed concurrently, equivocated, or was revoked
	// with nobody having endorsed it): it stays in the list, without
	// text, so nothing disappears silently.
	Withdrawn string
	Photo     *Photo
	Reactions map[string][]peer.ID
	// Receipts: the level each recipient has reached (Delivered, Read,
	// Acknowledged); recipients are the members when it was sent, and
	// the colleagues its escalations brought in.
	Receipts map[peer.ID]int
	// AckWithin: an urgent message wants an acknowledgement within this
	// (zero: none asked; see Deadline). Escalations are its standing
	// escalations, one per step (escalate.go). Sent is the message's own
	// signed time (raised, as its sort key is, above what it depends on),
	// which the deadline counts from: unlike Time, a dependant stamped in
	// the past never pulls it down.
	AckWithin   time.Duration
	Sent        time.Time
	Escalations []Escalation
	// QuotedBy is set when this device cannot read the message itself
	// (an escalation brought it in): Text is the quote that escalator's
	// op carried, its word as a receipt is.
	QuotedBy peer.ID
}

// Expired is one of this device's messages retention deleted unread.
type Expired struct {
	ID   crdt.OpID
	Time time.Time
}

// Photo is a photo message: its thumbnail, and the size of the full image
// (read it with Replica.PhotoData).
type Photo struct {
	Thumb []byte
	Size  int64
	ready bool
}

// Ready reports whether every chunk of the full image has arrived.
func (p *Photo) Ready() bool { return p.ready }

// State is a materialised conversation.
type State struct {
	ID        ConversationID
	Title     string
	Members   []peer.ID
	Admins    []peer.ID
	Retention time.Duration
	// Patient is who the conversation is about (nil: nobody), as the last
	// patient op in the conversation's order set it — causal order, then
	// sort key, then op ID — so a correction wins over what it saw and
	// concurrent ones resolve the same on every replica. PatientBy is the
	// member who set it.
	Patient   *patient.Patient
	PatientBy peer.ID
	// Role is the on-call role the conversation was addressed to (nil:
	// none), as the last role op in the conversation's order set it; the
	// name is the role's display name when the link was made.
	Role     *RoleLink
	Messages []Message
	// ExpiredUnread lists this device's own messages that retention
	// deleted before any recipient read them (kept while this replica
	// runs), oldest first.
	ExpiredUnread []Expired
	// Flags name members this device caught misbehaving: sealing two ops
	// under one message key (every replica holding both sees it), or
	// giving this device a welcome share that did not open.
	Flags map[peer.ID]string
}

// State materialises the conversation from the DAG. It depends only on the
// set of ops this device can read, never on arrival order.
func (r *Replica) State() *State {
	if !r.early.IsZero() && !r.now().Before(r.early) {
		// An escalation stamped ahead of this device's clock is due.
		r.early = time.Time{}
		r.rebuild, r.dirty, r.cache = true, true, nil
	}
	r.refresh()
	if r.cache != nil {
		return r.cache
	}
	st := &State{ID: r.conv}
	edits := map[crdt.OpID]*crdt.LWW[string]{}
	deleted := map[crdt.OpID]bool{}
	reacts := map[crdt.OpID]*crdt.ORSet[string]{}
	receipts := map[crdt.OpID]*crdt.MaxRegister[peer.ID]{}
	var texts, cums, escs []crdt.OpID
	for id := range r.deleted {
		deleted[id] = true // its plaintext is gone here, whatever voids the delete later
	}
	order := r.dag.Order()
	for i, id := range order {
		info := r.ops[id]
		if info != nil {
			info.ord = int32(i)
		}
		if info != nil && !info.valid && info.shown && info.p != nil {
			texts = append(texts, id) // withdrawn
		}
		if info == nil || !info.valid || info.p == nil {
			continue
		}
		key, _ := r.dag.Key(id)
		p := info.p
		var target crdt.OpID
		if len(p.Target) == 32 {
			copy(target[:], p.Target)
		}
		switch info.kind {
		case kindCreate:
			st.Title = p.Text
		case kindRole:
			st.Role = nil
			if p.Role != nil {
				st.Role = &RoleLink{ID: p.Role.ID, Name: p.Role.Name}
			}
		case kindPatient:
			st.Patient, st.PatientBy = nil, info.sender
			if p.Patient != nil {
				pt := p.Patient.patient()
				st.Patient = &pt
			}
		case kindText, kindPhoto:
			texts = append(texts, id)
		case kindEdit:
			if edits[target] == nil {
				edits[target] = &crdt.LWW[string]{}
			}
			edits[target].Set(p.Text, crdt.Stamp{Key: key, ID: id})
		case kindDelete:
			deleted[target] = true
		case kindReact, kindUnreact:
			if reacts[target] == nil {
				reacts[target] = crdt.NewORSet[string]()
			}
			el := p.Text + "\x00" + string(info.sender)
			if info.kind == kindReact {
				reacts[target].Add(el, id)
			} else {
				// Only the remover's own reactions it had observed.
				var tags []crdt.OpID
				for _, t := range p.Tags {
					tid, _ := crdt.OpIDFromBytes(t)
					if ti := r.ops[tid]; ti != nil && ti.sender == info.sender && r.inPast(tid, id) {
						tags = append(tags, tid)
					}
				}
				reacts[target].Remove(el, tags)
			}
		case kindEscalate:
			escs = append(escs, id)
		case kindReceipt:
			if p.cumulative() {
				cums = append(cums, id)
				continue
			}
			for _, t := range p.Targets {
				tid, _ := crdt.OpIDFromBytes(t)
				if receipts[tid] == nil {
					receipts[tid] = crdt.NewMaxRegister[peer.ID]()
				}
				receipts[tid].Raise(info.sender, int(p.Level))
			}
		}
	}
	var cov *cover
	if len(cums) > 0 {
		cov = r.newCover(order, cums)
	}
	var esc map[crdt.OpID][]Escalation
	if len(escs) > 0 {
		esc = r.escalations(escs)
	}
	for mid := range esc {
		if info := r.ops[mid]; info != nil && info.p == nil && !info.gone && !deleted[mid] {
			texts = append(texts, mid) // known here only from an escalation's quote
		}
		// A device that reads the message and finds a quote that differs
		// flags the escalator (its word, which others cannot check).
		if info := r.ops[mid]; info != nil && info.p != nil && (info.kind == kindText || info.kind == kindPhoto) {
			for _, id := range escs {
				q := r.ops[id]
				if string(q.p.Target) == string(mid[:]) && (q.p.Text != info.p.Text || !info.p.Urgent || q.p.AckWithin != info.p.AckWithin) {
					if st.Flags == nil {
						st.Flags = map[peer.ID]string{}
					}
					st.Flags[q.sender] = "escalated an urgent message quoting it differently"
				}
			}
		}
	}
	if len(esc) > 0 {
		slices.SortStableFunc(texts, func(a, b crdt.OpID) int { return int(r.ops[a].ord) - int(r.ops[b].ord) })
	}
	for _, id := range texts {
		info := r.ops[id]
		if info.p == nil {
			m, ok := r.quotedMessage(id, esc[id])
			if !ok {
				continue
			}
			m.Escalations = esc[id]
			r.fillReceipts(&m, receipts[id])
			st.Messages = append(st.Messages, m)
			continue
		}
		key, skewed := r.dag.Key(id)
		m := Message{ID: id, Sender: info.sender, Text: info.p.Text, Time: key.Time(), Sent: r.opTime(id), Urgent: info.p.Urgent,
			Skewed: skewed, Reactions: map[string][]peer.ID{}, Receipts: map[peer.ID]int{},
			AckWithin: time.Duration(info.p.AckWithin) * time.Second, Escalations: esc[id]}
		if len(info.p.Target) == 32 {
			copy(m.ReplyTo[:], info.p.Target)
		}
		if info.kind == kindPhoto {
			m.Photo = &Photo{Thumb: info.p.Data, Size: info.p.Size, ready: r.photoReady(info.p)}
		}
		if e := edits[id]; e != nil {
			m.Text, m.Edited = e.Value, true
		}
		if deleted[id] || info.gone {
			m.Text, m.Deleted, m.Photo = "", true, nil
		}
		if !info.valid {
			m.Text, m.Photo, m.Withdrawn = "", nil, "withdrawn"
			if info.reason != nil {
				m.Withdrawn = info.reason.Error()
			}
		}
		if set := reacts[id]; set != nil {
			for _, el := range set.Elements() {
				for i := range len(el) {
					if el[i] == 0 {
						m.Reactions[el[:i]] = append(m.Reactions[el[:i]], peer.ID(el[i+1:]))
						break
					}
				}
			}
			for _, who := range m.Reactions {
				slices.Sort(who)
			}
		}
		r.fillReceipts(&m, receipts[id])
		if cov != nil {
			cov.each(id, info, func(p peer.ID, lvl int) {
				if cur, ok := m.Receipts[p]; ok && lvl > cur {
					m.Receipts[p] = lvl
				}
			})
		}
		st.Messages = append(st.Messages, m)
	}
	for id, at := range r.expiredUnread {
		st.ExpiredUnread = append(st.ExpiredUnread, Expired{ID: id, Time: at})
	}
	slices.SortFunc(st.ExpiredUnread, func(a, b Expired) int { return a.Time.Compare(b.Time) })
	mem := r.membersOf(r.union(r.dag.AllHeads()))
	for p := range mem.members {
		st.Members = append(st.Members, p)
	}
	for p := range mem.admins {
		st.Admins = append(st.Admins, p)
	}
	sort.Slice(st.Members, func(i, j int) bool { return st.Members[i] < st.Members[j] })
	sort.Slice(st.Admins, func(i, j int) bool { return st.Admins[i] < st.Admins[j] })
	st.Retention = time.Duration(mem.retention.Value) * time.Second
	if len(r.flags) > 0 {
		if st.Flags == nil {
			st.Flags = map[peer.ID]string{}
		}
		maps.Copy(st.Flags, r.flags)
	}
	r.cache = st
	return st
}

// fillReceipts sets m's recipients — the members when it was sent and
// the colleagues its escalations brought in, but its sender — and the
// explicit receipts they made.
func (r *Replica) fillReceipts(m *Message, reg *crdt.MaxRegister[peer.ID]) {
	for _, rc := range r.recipients(m.ID) {
		m.Receipts[rc] = 0
	}
	for _, e := range m.Escalations {
		for _, t := range e.To {
			if t != m.Sender {
				m.Receipts[t] = 0
			}
		}
	}
	if reg != nil {
		reg.Each(func(p peer.ID, lvl int) {
			if _, ok := m.Receipts[p]; ok {
				m.Receipts[p] = lvl
			}
		})
	}
}

// recipients of a message: the members when it was sent, but its sender.
func (r *Replica) recipients(id crdt.OpID) []peer.ID {
	info := r.ops[id]
	var out []peer.ID
	for p := range r.membersOf(info.before).members {
		if p != info.sender {
			out = append(out, p)
		}
	}
	return out
}

func (r *Replica) reactionTags(msg crdt.OpID, emoji string, who peer.ID) []crdt.OpID {
	var out []crdt.OpID
	for id, info := range r.ops {
		if info.valid && info.kind == kindReact && info.sender == who && info.p.Text == emoji && string(info.p.Target) == string(msg[:]) {
			out = append(out, id)
		}
	}
	return out
}

// Delivery is a message's delivery state for its sender: overall (the least
// advanced recipient) and per recipient.
type Delivery struct {
	State        string
	PerRecipient map[peer.ID]string
}

// Delivery reports the honest delivery state of a message.
func (r *Replica) Delivery(msg crdt.OpID) (Delivery, error) {
	st := r.State()
	i := slices.IndexFunc(st.Messages, func(m Message) bool { return m.ID == msg })
	if i < 0 {
		return Delivery{}, ErrNoSuchMessage
	}
	return r.DeliveryOf(st.Messages[i]), nil
}

// DeliveryOf is Delivery for a message of State.
func (r *Replica) DeliveryOf(m Message) Delivery {
	msg := m.ID
	d := Delivery{PerRecipient: map[peer.ID]string{}}
	// Held by a node whose certificate is not revoked: a revoked anchor
	// wipes itself and is cut off, so what it acknowledged is held no more.
	held := false
	for by := range r.held[msg] {
		if r.revoked == nil || !r.revoked(by) {
			held = true
			break
		}
	}
	least := len(levelState)
	for p, lvl := range m.Receipts {
		s := levelState[lvl]
		if lvl == 0 && held {
			s = StateHeld
		}
		d.PerRecipient[p] = s
		least = min(least, lvl)
	}
	switch {
	case least == len(levelState): // no recipients (alone in the conversation)
		d.State = StateQueued
		if held {
			d.State = StateHeld
		}
	case least == 0 && held:
		d.State = StateHeld
	default:
		d.State = levelState[least]
	}
	return d
}

// Expire applies retention: messages older than the retention setting in
// force when they were sent (see below) are deleted on this replica — their content destroyed, their op IDs kept so
// sync never fetches them again — and expired message keys are dropped:
// skipped keys older than e2e.MessageKeyWindow, and the chains of epochs
// no longer in use for longer than that window.
func (r *Replica) Expire(now time.Time) int {
	r.recv.Expire(now)
	r.dev.Prekeys.Expire(now)
	cur, _ := r.current(r.headView())
	for _, ep := range r.recv.Epochs() {
		if ep == cur {
			delete(r.superseded, ep)
			continue
		}
		since, ok := r.superseded[ep]
		if !ok {
			r.superseded[ep] = now
		} else if now.Sub(since) > e2e.MessageKeyWindow {
			r.forget(ep)
			r.dropped[ep] = true
			delete(r.superseded, ep)
		}
	}
	// A message is kept for the retention in force when it was sent: the
	// newest (by the register's stamp) retention op, valid now, in its
	// causal past — as disappearing messages work elsewhere. A setting
	// never reaches history written before it, so an admin — or one
	// removed concurrently, whose op is void only once the removal
	// arrives — cannot wipe what the conversation already holds.
	type setting struct {
		id    crdt.OpID
		stamp crdt.Stamp
		keep  time.Duration
	}
	var rets []setting
	for id, info := range r.ops {
		if info.kind == kindRetention && info.valid && info.p != nil {
			k, _ := r.dag.Key(id)
			rets = append(rets, setting{id, crdt.Stamp{Key: k, ID: id}, time.Duration(info.p.Retention) * time.Second})
		}
	}
	if !slices.ContainsFunc(rets, func(s setting) bool { return s.keep > 0 }) {
		return 0
	}
	slices.SortFunc(rets, func(a, b setting) int { return b.stamp.Compare(a.stamp) }) // newest first
	retentionOf := func(info *opInfo) time.Duration {
		for _, s := range rets {
			if info.before != nil && info.before.has(s.id) {
				return s.keep
			}
		}
		return 0
	}
	st := r.State()
	unread := map[crdt.OpID]time.Time{}
	for _, m := range st.Messages {
		if m.Sender != r.dev.ID || m.Deleted || m.Withdrawn != "" {
			continue
		}
		read := false
		for _, lvl := range m.Receipts {
			read = read || lvl >= Read
		}
		if !read {
			unread[m.ID] = m.Time
		}
	}
	n := 0
	for id, info := range r.ops {
		switch info.kind {
		case kindText, kindEdit, kindReact, kindUnreact, kindPhoto, kindChunk:
		default:
			continue
		}
		if info.gone {
			continue
		}
		// The op's own signed time, not its sort key: a dependant stamped
		// in the past must not make fresh messages expire.
		if ret := retentionOf(info); ret > 0 && info.env != nil && now.Sub(time.UnixMilli(info.env.Wall)) > ret {
			if at, ok := unread[id]; ok {
				if r.expiredUnread == nil {
					r.expiredUnread = map[crdt.OpID]time.Time{}
				}
				r.expiredUnread[id] = at
			}
			r.dag.Delete(id)
			info.p, info.gone, info.raw = nil, true, nil
			// The envelope shares raw's bytes (Envelope.Share): keep a copy
			// without the body that holds none of them, so they go too (a
			// copy also because the envelope may be the mesh's).
			info.env = info.env.Unshared()
			if r.plain != nil {
				r.plain.Delete(id)
			}
			n++
		}
	}
	r.cache = nil
	return n
}

// Missing lists op IDs that buffered ops depend on: what sync should fetch.
func (r *Replica) Missing() []crdt.OpID { return r.dag.Missing() }

// IDs lists every op ID this replica holds (deleted ones too): the set sync
// reconciles.
func (r *Replica) IDs() []crdt.OpID { return r.dag.IDs() }

// SortedIDs is IDs shared, not copied (crdt.DAG.SortedIDs): callers must
// not modify it; it stays valid, and unchanged, as ops are applied.
func (r *Replica) SortedIDs() []crdt.OpID { return r.dag.SortedIDs() }

// Envelope returns the raw envelope of an op, for serving sync.
func (r *Replica) Envelope(id crdt.OpID) ([]byte, bool) {
	if info := r.ops[id]; info != nil && info.raw != nil {
		return info.raw, true
	}
	return nil, false
}

func (r *Replica) photoReady(p *payload) bool {
	for _, c := range p.Chunks {
		t := r.target(c)
		if t == nil || t.p == nil || t.kind != kindChunk {
			return false
		}
	}
	return true
}

// PhotoData assembles the full image of a photo message.
func (r *Replica) PhotoData(msg crdt.OpID) ([]byte, error) {
	info := r.ops[msg]
	if info == nil || !info.valid || info.kind != kindPhoto || info.p == nil || len(info.p.Chunks) == 0 {
		return nil, ErrNoSuchMessage // unknown, or deleted
	}
	var out []byte
	for _, c := range info.p.Chunks {
		t := r.target(c)
		if t == nil || t.p == nil || t.kind != kindChunk || t.sender != info.sender {
			return nil, fmt.Errorf("%w: photo still arriving", ErrNoSuchMessage)
		}
		out = append(out, t.p.Data...)
	}
	return out, nil
}

// SortCausal orders op IDs so that each follows its dependencies, so a
// peer fetching them applies them without buffering.
func (r *Replica) SortCausal(ids []crdt.OpID) { r.dag.SortCausal(ids) }

// KeyState says how much key material this replica keeps: the epochs it
// can still open, and skipped message keys held for late messages.
func (r *Replica) KeyState() (epochs, skipped int) {
	return len(r.recv.Epochs()), r.recv.Skipped()
}
