package chat

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// This file holds urgent escalation ("Urgent escalation" in doc.go).

// Acknowledgement times and escalation bounds.
const (
	DefaultAckWithin     = 5 * time.Minute
	MinAckWithin         = 30 * time.Second
	MaxAckWithin         = 24 * time.Hour
	MaxEscalationSteps   = 16
	MaxEscalationTargets = 8
	// EscalationSkew is how far ahead of this device's clock an
	// escalation op may be stamped and still stand here: one stamped
	// further ahead waits until this device's clock reaches its time
	// less EscalationSkew (doc.go, "Urgent escalation").
	EscalationSkew = 10 * time.Second
)

// Escalation is the standing escalation of one step of an urgent message:
// of the valid escalation ops for that step, the earliest by its own time
// (opTime), then the lowest op ID, so replicas that merged concurrent ones
// agree on one, and one signed later on old deps cannot take over a step
// (nor move the next step's due time) after the fact (redteam10).
type Escalation struct {
	ID    crdt.OpID
	Step  int
	To    []peer.ID
	By    peer.ID
	Time  time.Time // the escalation op's own time (opTime, not its sort key)
	Label string    // what the escalator said the targets are (a role)
}

// Deadline is when an urgent message wanted its acknowledgement by (zero
// if it asked for none).
func (m *Message) Deadline() time.Time {
	if !m.Urgent || m.AckWithin <= 0 {
		return time.Time{}
	}
	return m.sentAt().Add(m.AckWithin)
}

// sentAt is the time the deadline counts from: the message's own time
// (Sent), never its sort key, which a dependant stamped in the past pulls
// down (redteam10); Time for a Message built without Sent.
func (m *Message) sentAt() time.Time {
	if m.Sent.IsZero() {
		return m.Time
	}
	return m.Sent
}

// opTime is the time the escalation rules judge op id by: its own signed
// time, raised to its sort key when that is later (an op stamped before
// its dependencies sorts, and counts, just after them) but never pulled
// down by a dependant — a plain member's backdated receipt must not move
// a deadline or void an escalation (redteam10). It depends on the DAG
// only, so every replica computes the same.
func (r *Replica) opTime(id crdt.OpID) time.Time {
	k, _ := r.dag.Key(id)
	if s := r.dag.Stamp(id); s.Compare(k) > 0 {
		k = s
	}
	return k.Time()
}

// Due is when the next step of escalation falls due: the deadline for
// the first, the standing escalation of the last step's time plus
// AckWithin for the others (zero if no acknowledgement was asked).
func (m *Message) Due() time.Time {
	if n := len(m.Escalations); n > 0 && !m.Deadline().IsZero() {
		return m.Escalations[n-1].Time.Add(m.AckWithin)
	}
	return m.Deadline()
}

// Acknowledged reports whether any recipient acknowledged the message.
func (m *Message) Acknowledged() bool {
	for _, lvl := range m.Receipts {
		if lvl >= Acknowledged {
			return true
		}
	}
	return false
}

// NextStep is the step an escalation of m would take now.
func (m *Message) NextStep() int {
	if n := len(m.Escalations); n > 0 {
		return m.Escalations[n-1].Step + 1
	}
	return 1
}

func ackWithinOK(s int64) bool {
	return s >= int64(MinAckWithin/time.Second) && s <= int64(MaxAckWithin/time.Second)
}

// AckWithinSeconds checks an acknowledgement time (0: the default) and
// returns it in whole seconds.
func AckWithinSeconds(d time.Duration) (int64, error) {
	if d == 0 {
		d = DefaultAckWithin
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 || !ackWithinOK(s) {
		return 0, ErrAckWithin
	}
	return s, nil
}

func (p *payload) checkEscalation() error {
	bad := func(what string) error { return fmt.Errorf("%w: %s", ErrInvalidPayload, what) }
	if p.AckWithin != 0 && (!ackWithinOK(p.AckWithin) || !p.Urgent ||
		(p.Kind != kindText && p.Kind != kindPhoto && p.Kind != kindEscalate)) {
		return fmt.Errorf("%w: %w", ErrInvalidPayload, ErrAckWithin)
	}
	if p.Kind != kindEscalate {
		if p.Step != 0 || len(p.To) > 0 || p.Label != "" {
			return bad(fmt.Sprintf("escalation fields on kind %d", p.Kind))
		}
		return nil
	}
	switch {
	case len(p.Target) != 32:
		return bad("escalation without its message")
	case p.Step < 1 || p.Step > MaxEscalationSteps:
		return bad("escalation step")
	case len(p.To) == 0 || len(p.To) > MaxEscalationTargets:
		return bad("escalation targets")
	case len(p.Label) > maxTitle:
		return bad("escalation label")
	case !p.Urgent || p.AckWithin == 0:
		return bad("escalation of a message that asked for no acknowledgement")
	}
	for i, t := range p.To {
		if _, err := peer.IDFromBytes(t); err != nil {
			return bad("escalation target")
		}
		if i > 0 && bytes.Compare(p.To[i-1], t) >= 0 {
			return bad("escalation targets not sorted and distinct")
		}
	}
	return nil
}

// escalationRule judges an escalation op from what every replica that
// reads it holds — the message's header (its sender, its time), the
// escalation's own payload, and control ops — never from the message's
// sealed content, which the colleagues it brings in cannot read.
func (r *Replica) escalationRule(id crdt.OpID, info *opInfo, m *membership) (bool, error) {
	denied := func(what string) (bool, error) {
		return false, fmt.Errorf("%w: %s by %s", ErrNotAuthorised, what, info.sender)
	}
	p := info.p
	mid, _ := crdt.OpIDFromBytes(p.Target)
	t := r.ops[mid]
	if t == nil || t.stub || (t.env != nil && t.env.Kind != e2e.KindContent) || !r.inPast(mid, id) {
		return denied("escalation of no message in its past")
	}
	// Only an admin escalates: an escalation makes members, as an add
	// does, and a member who is no admin must not bring back someone an
	// admin removed, nor a stranger or a revoked device (redteam9).
	if !m.admins[info.sender] {
		return denied("escalation by a member who is no admin")
	}
	if r.revoked != nil && slices.ContainsFunc(p.To, func(b []byte) bool { return r.revoked(peer.ID(b)) }) {
		return denied("escalation to a revoked device")
	}
	tm, te := r.opTime(mid), r.opTime(id)
	if te.Before(tm.Add(time.Duration(p.AckWithin) * time.Second)) {
		return denied("escalation before the message's deadline")
	}
	// The deadline is judged on the op's time, which its escalator sets:
	// an op stamped ahead of this device's clock (beyond EscalationSkew)
	// waits here until the clock reaches it, so a clock set ahead does not
	// escalate before the deadline has passed for the colleagues too.
	if ready := te.Add(-EscalationSkew); r.now().Before(ready) {
		if r.early.IsZero() || ready.Before(r.early) {
			r.early = ready
		}
		return denied("escalation stamped ahead of this device's clock")
	}
	// Step k > 1 needs a valid step k-1 in its past, AckWithin before it.
	within := time.Duration(p.AckWithin) * time.Second
	prev := p.Step == 1
	for x := range info.before.set {
		xi := r.ops[x]
		if !xi.valid || xi.p == nil || xi.kind != kindEscalate || !bytes.Equal(xi.p.Target, p.Target) {
			continue
		}
		if xi.p.Step >= p.Step {
			return denied("escalation of a step already taken in its past")
		}
		if xi.p.Step == p.Step-1 {
			prev = prev || !te.Before(r.opTime(x).Add(within))
		}
	}
	// Receipts are not membership ops, so views do not list them: look
	// for an acknowledgement of the message in the op's past directly.
	for x, xi := range r.ops {
		if xi.valid && xi.p != nil && xi.kind == kindReceipt && xi.p.Level == Acknowledged && xi.sender != t.sender &&
			slices.ContainsFunc(xi.p.Targets, func(b []byte) bool { return bytes.Equal(b, p.Target) }) && r.inPast(x, id) {
			return denied("escalation of an acknowledged message")
		}
	}
	if !prev {
		return denied("escalation step without the previous step in its past, or before its deadline")
	}
	return true, nil
}

// Escalate writes escalation step of message msg to colleagues to, with a
// label saying who they are (a role): this device is an admin, the message
// asked for an acknowledgement, its deadline has passed and nobody
// acknowledged it. The targets become members (each
// needs a current key, as for Add) and a new epoch is started for them;
// the op carries the message's text, which they cannot otherwise read.
func (r *Replica) Escalate(msg crdt.OpID, step int, to []peer.ID, label string) (Out, error) {
	info := r.ops[msg]
	if info == nil || !info.valid || info.p == nil || (info.kind != kindText && info.kind != kindPhoto) ||
		!info.p.Urgent || info.p.AckWithin == 0 {
		return Out{}, fmt.Errorf("%w: not an urgent message this device reads", ErrNotEscalatable)
	}
	if err := r.permitted(&payload{Kind: kindEscalate, Target: msg[:]}); err != nil {
		return Out{}, err // no admin
	}
	st := r.State()
	i := slices.IndexFunc(st.Messages, func(m Message) bool { return m.ID == msg })
	if i < 0 || st.Messages[i].Deleted {
		return Out{}, fmt.Errorf("%w: deleted", ErrNotEscalatable)
	}
	m := st.Messages[i]
	switch {
	case m.Acknowledged():
		return Out{}, fmt.Errorf("%w: already acknowledged", ErrNotEscalatable)
	case step != m.NextStep():
		return Out{}, fmt.Errorf("%w: step %d (next is %d)", ErrNotEscalatable, step, m.NextStep())
	case step > MaxEscalationSteps:
		return Out{}, fmt.Errorf("%w: no step after %d", ErrNotEscalatable, MaxEscalationSteps)
	case r.now().Before(m.Due()):
		return Out{}, fmt.Errorf("%w: before its deadline", ErrNotEscalatable)
	}
	to = uniq(to)
	slices.Sort(to)
	if len(to) == 0 || len(to) > MaxEscalationTargets {
		return Out{}, fmt.Errorf("%w: %d targets", ErrNotEscalatable, len(to))
	}
	now := r.now()
	p := &payload{Kind: kindEscalate, Target: msg[:], Step: uint32(step), Label: label,
		Urgent: true, AckWithin: info.p.AckWithin, Text: info.p.Text}
	for _, t := range to {
		if t != r.dev.ID {
			if _, err := r.dir.Recipient(t, now); err != nil {
				return Out{}, fmt.Errorf("no key to seal the next epoch to %s: %w", t, err)
			}
		}
		p.To = append(p.To, []byte(t))
	}
	out, err := r.do(p)
	if err != nil {
		return out, err
	}
	// Start the new epoch at once, so the colleagues brought in read it;
	// its welcome is urgent like the escalation, or they could not read
	// the escalation until a routine welcome crawled in behind a backlog.
	w, err := r.prepareEpoch(true)
	out.Merge(w)
	return out, err
}

// escalations collects, per message, the standing escalation of each step
// among the valid escalation ops of ids, sorted by step.
func (r *Replica) escalations(ids []crdt.OpID) map[crdt.OpID][]Escalation {
	out := map[crdt.OpID][]Escalation{}
	for _, id := range ids {
		info := r.ops[id]
		mid, _ := crdt.OpIDFromBytes(info.p.Target)
		e := Escalation{ID: id, Step: int(info.p.Step), By: info.sender, Time: r.opTime(id), Label: info.p.Label}
		for _, t := range info.p.To {
			e.To = append(e.To, peer.ID(t))
		}
		list := out[mid]
		j := slices.IndexFunc(list, func(x Escalation) bool { return x.Step == e.Step })
		switch {
		case j < 0:
			list = append(list, e)
		case e.Time.Before(list[j].Time) || (e.Time.Equal(list[j].Time) && id.Compare(list[j].ID) < 0):
			list[j] = e
		}
		out[mid] = list
	}
	for _, list := range out {
		slices.SortFunc(list, func(a, b Escalation) int { return a.Step - b.Step })
	}
	return out
}

// quotedMessage is an escalated message this device cannot read itself
// (it was brought in by the escalation): its text is the quote the
// standing escalation of its first step carried.
func (r *Replica) quotedMessage(mid crdt.OpID, esc []Escalation) (Message, bool) {
	info := r.ops[mid]
	if info == nil || info.stub || info.gone || len(esc) == 0 {
		return Message{}, false
	}
	q := r.ops[esc[0].ID].p
	k, skewed := r.dag.Key(mid)
	return Message{ID: mid, Sender: info.sender, Text: q.Text, Time: k.Time(), Sent: r.opTime(mid), Urgent: true,
		AckWithin: time.Duration(q.AckWithin) * time.Second, Skewed: skewed, QuotedBy: esc[0].By,
		Reactions: map[string][]peer.ID{}, Receipts: map[peer.ID]int{}}, true
}

// quoted reports whether msg is a message this device knows only from an
// escalation's quote (it may acknowledge it).
func (r *Replica) quoted(msg crdt.OpID) bool {
	if info := r.ops[msg]; info == nil || info.p != nil || info.stub || info.gone {
		return false
	}
	for _, info := range r.ops {
		if info.valid && info.kind == kindEscalate && info.p != nil && bytes.Equal(info.p.Target, msg[:]) {
			return true
		}
	}
	return false
}
