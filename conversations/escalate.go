package conversations

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
)

// Urgent escalation. An urgent message of ours that nobody acknowledged
// by its deadline (chat.Message.Deadline; for a later step, the previous
// escalation's time plus the same AckWithin) is first re-alerted —
// EventReAlert to the app — and EscalateAfter after that deadline (a
// time every device computes alike from the DAG) escalated to the
// next target the Escalator names (chat.Replica.Escalate). With no
// Escalator, or none it can name, the sender is asked to choose
// (EventChoose, and the message's escalation state "choose") and
// Escalate takes the colleague it chose. On the recipients' devices the
// same deadline raises EventReAlert while their user has not
// acknowledged; a colleague an escalation names gets EventEscalated once
// per (message, step), whichever of concurrent escalations stands, while
// the message is unacknowledged. An own message retention deleted unread
// raises EventExpiredUnread.
//
// The loop (StartEscalations) is one goroutine owned by the Service:
// it wakes at the next deadline by the layer's clock (Config.Now), on
// changes to a conversation, and at most EscalationRescan apart; Close
// stops it. CheckEscalations is one pass of it, which tests drive.
// What it has alerted is kept in memory: after a restart a due
// re-alert is given again (never an escalation op twice: the DAG has
// it). That memory follows the urgent messages still open: a message
// acknowledged (by anyone), deleted, withdrawn, gone with retention or
// with its conversation is forgotten, and so are the steps before an
// open message's next; an escalation naming this device that arrives
// with, or after, an acknowledgement is not alerted.

// Event kinds of escalation.
const (
	EventReAlert       = "realert"        // Ops: an urgent message past its deadline, unacknowledged
	EventChoose        = "choose"         // Ops: our urgent message, with no next target: the sender chooses
	EventEscalated     = "escalated"      // Ops: the message and the standing escalation naming this device
	EventExpiredUnread = "expired-unread" // Ops: our message retention deleted before anyone read it
)

// Escalation states of a message (Message.Escalation).
const (
	EscalationWaiting      = "waiting"      // urgent, before its deadline
	EscalationDue          = "due"          // deadline passed, unacknowledged: re-alerted
	EscalationChoose       = "choose"       // our message: nobody next; the sender chooses
	EscalationEscalated    = "escalated"    // escalated (Message.Escalations), waiting for the next deadline
	EscalationAcknowledged = "acknowledged" // acknowledged by someone
)

// EscalateAfter is how long after its deadline (when the re-alert is
// due) an unacknowledged urgent message of ours is escalated.
const EscalateAfter = time.Minute

// EscalationRescan bounds how long the loop sleeps, should a change
// event be dropped.
const EscalationRescan = time.Minute

// Escalator names who an urgent message goes to next: step is the
// escalation step to make (1 for the first). The device implements it
// from the on-call rota.
type Escalator interface {
	Next(conversationID string, msgID string, step int) (targets []peer.ID, label string, ok bool)
}

// ErrEscalation: a POST escalate that cannot be made now.
var ErrEscalation = errors.New("cannot escalate this message now")

type escKey struct {
	msg  crdt.OpID
	step int
}

// escalations is the loop's memory, guarded by mu. Lock order: a
// conversation's mu, then escalations.mu; nothing calls into the
// replica while holding it.
type escalations struct {
	mu      sync.Mutex
	esc     Escalator
	realert map[escKey]time.Time // re-alerted at (ours and others')
	choose  map[escKey]bool      // ours: the sender was asked to choose
	alerted map[escKey]bool      // escalations naming this device, alerted
	expired map[crdt.OpID]bool   // expired-unread, told
	acting  map[escKey]bool      // ours: an escalation was attempted (by one pass only)
	cancel  context.CancelFunc
	done    chan struct{}
	started bool
	stopped bool // Close ran: no loop starts
}

func (e *escalations) init() {
	if e.realert == nil {
		e.realert, e.choose, e.alerted, e.expired = map[escKey]time.Time{}, map[escKey]bool{}, map[escKey]bool{}, map[crdt.OpID]bool{}
		e.acting = map[escKey]bool{}
	}
}

// StartEscalations starts the escalation loop with esc (nil: the sender
// always chooses). Close stops it. A second call only changes esc.
func (s *Service) StartEscalations(esc Escalator) {
	e := &s.esc
	e.mu.Lock()
	defer e.mu.Unlock()
	e.init()
	e.esc = esc
	if e.started || e.stopped || s.closed.Load() {
		return
	}
	e.started = true
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	ch, unsub := s.Events()
	go s.escalationLoop(ctx, ch, unsub, e.done)
}

func (s *Service) stopEscalations() {
	e := &s.esc
	e.mu.Lock()
	cancel, done := e.cancel, e.done
	e.cancel, e.stopped = nil, true
	e.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (s *Service) escalationLoop(ctx context.Context, ch <-chan Event, unsub func(), done chan struct{}) {
	defer close(done)
	defer unsub()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var only []chat.ConversationID // nil: every conversation
	var pending time.Time          // the earliest due time known
	for {
		next := s.checkEscalations(only)
		if only == nil || pending.IsZero() || (!next.IsZero() && next.Before(pending)) {
			pending = next
		}
		wait := EscalationRescan
		if !pending.IsZero() {
			wait = min(wait, pending.Sub(s.cfg.Now()))
		}
		timer.Reset(max(wait, 10*time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			// One pass for the changes queued meanwhile: a device taking
			// in a burst makes an event per batch.
			only = changed(nil, ev)
		drain:
			for range cap(ch) {
				select {
				case ev, ok := <-ch:
					if !ok {
						return
					}
					only = changed(only, ev)
				default:
					break drain
				}
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
					only = nil
				default:
				}
			}
		case <-timer.C:
			only = nil
		}
	}
}

// changed adds to only the conversation ev says changed (our own alerts
// change nothing); the result is never nil (nil means every conversation).
func changed(only []chat.ConversationID, ev Event) []chat.ConversationID {
	if only == nil {
		only = []chat.ConversationID{}
	}
	if (ev.Kind == EventMessage || ev.Kind == EventConversation) && !slices.Contains(only, ev.Conversation) {
		only = append(only, ev.Conversation)
	}
	return only
}

// CheckEscalations makes one pass over every conversation: it raises the
// re-alerts, escalations, requests to choose and alerts that are due by
// the layer's clock, and returns when the next one falls due (zero if
// none is pending).
func (s *Service) CheckEscalations() time.Time { return s.checkEscalations(nil) }

type escAction struct {
	conv    chat.ConversationID
	msg     crdt.OpID
	step    int
	targets []peer.ID
	label   string
}

func (s *Service) checkEscalations(only []chat.ConversationID) time.Time {
	now := s.cfg.Now()
	self := s.cfg.Device.ID
	var next time.Time
	soon := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	var evs []Event
	var acts []escAction
	convs := s.all()
	if only != nil {
		convs = convs[:0:0]
		for _, id := range only {
			if c, err := s.conv(id); err == nil {
				convs = append(convs, c)
			}
		}
	}
	e := &s.esc
	// open: per urgent message still waiting for an acknowledgement, the
	// step it would escalate at next; what the loop remembers of any
	// other message is pruned (handled: acknowledged, deleted, withdrawn,
	// gone with retention or with the conversation).
	open := map[crdt.OpID]int{}
	expired := map[crdt.OpID]bool{}
	var judged []crdt.OpID // messages of the conversations this pass saw
	for _, c := range convs {
		c.mu.Lock()
		if !c.r.MayEscalate() {
			// No urgent message, no escalation, nothing expired unread
			// ever here: nothing to alert and nothing the loop remembers
			// (it remembers urgent and expired messages only), so the
			// conversation is not materialised — a pass runs on every
			// batch taken in, and State walks the whole DAG.
			c.mu.Unlock()
			continue
		}
		id := c.r.ID()
		st := c.r.State()
		e.mu.Lock()
		e.init()
		for _, x := range st.ExpiredUnread {
			expired[x.ID] = true
			if !e.expired[x.ID] {
				e.expired[x.ID] = true
				evs = append(evs, Event{Kind: EventExpiredUnread, Conversation: id, Ops: []crdt.OpID{x.ID}})
			}
		}
		for i := range st.Messages {
			m := &st.Messages[i]
			judged = append(judged, m.ID)
			if !m.Urgent || m.AckWithin <= 0 || m.Deleted || m.Withdrawn != "" {
				continue
			}
			// Acknowledged (by anyone, or by our user): nothing more to
			// alert — not even an escalation naming us that arrived with
			// the acknowledgement.
			if m.Acknowledged() || m.Receipts[self] >= chat.Acknowledged {
				continue
			}
			open[m.ID] = m.NextStep()
			for _, x := range m.Escalations {
				k := escKey{m.ID, x.Step}
				if slices.Contains(x.To, self) && !e.alerted[k] {
					e.alerted[k] = true
					evs = append(evs, Event{Kind: EventEscalated, Conversation: id, Ops: []crdt.OpID{m.ID, x.ID}})
				}
			}
			step, due := dueOf(m)
			if now.Before(due) {
				soon(due)
				continue
			}
			k := escKey{m.ID, step}
			if _, realerted := e.realert[k]; !realerted {
				e.realert[k] = now
				evs = append(evs, Event{Kind: EventReAlert, Conversation: id, Ops: []crdt.OpID{m.ID}})
			}
			if m.Sender != self || e.choose[k] || e.acting[k] || step > chat.MaxEscalationSteps {
				continue
			}
			if now.Before(due.Add(EscalateAfter)) {
				soon(due.Add(EscalateAfter))
				continue
			}
			e.acting[k] = true
			acts = append(acts, escAction{conv: id, msg: m.ID, step: step})
		}
		e.mu.Unlock()
		c.mu.Unlock()
	}
	e.mu.Lock()
	e.init()
	e.prune(open, expired, judged, only == nil)
	esc := e.esc
	e.mu.Unlock()
	for _, a := range acts {
		ok := false
		if esc != nil {
			a.targets, a.label, ok = esc.Next(a.conv.String(), a.msg.String(), a.step)
		}
		if ok && len(a.targets) > 0 {
			_, err := s.escalate(a.conv, a.msg, a.step, a.targets, a.label)
			if err == nil {
				continue
			}
			s.log.Warn("escalation not made; the sender chooses", "conversation", a.conv.String(), "err", err)
		}
		e.mu.Lock()
		first := !e.choose[escKey{a.msg, a.step}]
		e.choose[escKey{a.msg, a.step}] = true
		e.mu.Unlock()
		if first {
			evs = append(evs, Event{Kind: EventChoose, Conversation: a.conv, Ops: []crdt.OpID{a.msg}})
		}
	}
	for _, ev := range evs {
		s.events.emit(ev)
	}
	return next
}

// prune forgets what the loop remembers of handled messages, so its
// memory follows the urgent messages still open, never the ones it has
// handled: entries of a message not open (among judged, the messages of
// the conversations the pass saw; on a full pass, any) go, and of an open
// message the re-alert, choose and acting entries of steps before its
// next (escalations naming this device stay: they are alerted once per
// step, at most MaxEscalationSteps). Expired-unread entries go once the
// conversation no longer lists them (full passes only). Callers hold mu.
func (e *escalations) prune(open map[crdt.OpID]int, expired map[crdt.OpID]bool, judged []crdt.OpID, full bool) {
	seen := make(map[crdt.OpID]bool, len(judged))
	for _, id := range judged {
		seen[id] = true
	}
	gone := func(k escKey) bool {
		if next, ok := open[k.msg]; ok {
			return k.step < next
		}
		return full || seen[k.msg]
	}
	for k := range e.realert {
		if gone(k) {
			delete(e.realert, k)
		}
	}
	for k := range e.choose {
		if gone(k) {
			delete(e.choose, k)
		}
	}
	for k := range e.acting {
		if gone(k) {
			delete(e.acting, k)
		}
	}
	for k := range e.alerted {
		if _, ok := open[k.msg]; !ok && gone(k) {
			delete(e.alerted, k)
		}
	}
	if full {
		for id := range e.expired {
			if !expired[id] {
				delete(e.expired, id)
			}
		}
	}
}

// size is how many entries the loop remembers (tests).
func (e *escalations) size() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.realert) + len(e.choose) + len(e.alerted) + len(e.expired) + len(e.acting)
}

// dueOf is the step an urgent message would be escalated at next and
// when it falls due (chat.Message.Due).
func dueOf(m *chat.Message) (int, time.Time) { return m.NextStep(), m.Due() }

// escalationState says where an urgent message stands (empty for others).
// Callers hold the conversation's lock.
func (s *Service) escalationState(m *chat.Message, now time.Time) string {
	if !m.Urgent || m.AckWithin <= 0 {
		return ""
	}
	if m.Acknowledged() {
		return EscalationAcknowledged
	}
	step, due := dueOf(m)
	s.esc.mu.Lock()
	choose := s.esc.choose[escKey{m.ID, step}]
	s.esc.mu.Unlock()
	switch {
	case choose:
		return EscalationChoose
	case now.Before(due) && len(m.Escalations) > 0:
		return EscalationEscalated
	case now.Before(due):
		return EscalationWaiting
	}
	return EscalationDue
}

// Escalate escalates our urgent message msg to colleagues the sender (or
// an admin) chose: the next step, once its deadline has passed.
func (s *Service) Escalate(id chat.ConversationID, msg crdt.OpID, to []peer.ID) (crdt.OpID, error) {
	c, err := s.conv(id)
	if err != nil {
		return crdt.OpID{}, err
	}
	c.mu.Lock()
	st := c.r.State()
	i := slices.IndexFunc(st.Messages, func(m chat.Message) bool { return m.ID == msg })
	step := 0
	if i >= 0 {
		step = st.Messages[i].NextStep()
	}
	c.mu.Unlock()
	if i < 0 {
		return crdt.OpID{}, chat.ErrNoSuchMessage
	}
	return s.escalate(id, msg, step, to, "")
}

func (s *Service) escalate(id chat.ConversationID, msg crdt.OpID, step int, to []peer.ID, label string) (crdt.OpID, error) {
	op, err := s.do(id, func(r *chat.Replica) (chat.Out, error) { return r.Escalate(msg, step, to, label) })
	if err != nil {
		return op, fmt.Errorf("%w: %w", ErrEscalation, err)
	}
	return op, nil
}
