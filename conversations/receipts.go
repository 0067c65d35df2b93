package conversations

import (
	"time"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
)

// ReceiptWindow is how long this device coalesces its delivered and read
// receipts. Receipts are cumulative (one op covers everything up to the
// heads it names; see chat.Replica.Receipt): the first receipt of a level
// after a quiet spell is made at once — with the batch that brought the
// messages, or with the read the user reported — and opens a window;
// whatever is delivered or read while it is open goes in one receipt at
// its end, which opens the next. So a burst of k messages costs each
// member at most two delivered receipts per window, not k, and a
// sender's "delivered" is at most one window behind the truth, never
// ahead of it. Acknowledgements are never held back.
const ReceiptWindow = 500 * time.Millisecond

// receipts is a conversation's receipt windows, guarded by conv.mu.
type receipts struct {
	open  [2]*time.Timer // per level (Delivered, Read): the window since our last receipt of it
	owed  bool           // messages of others applied since our last delivered receipt
	reads []crdt.OpID    // messages the user read since our last read receipt
}

func window(level int) int { return level - chat.Delivered }

// autoReceipts acknowledges delivery of the messages of others a batch
// brought: that is the "delivered" state their senders see. It returns the
// receipt to publish, if one is due now (no window open); otherwise the
// open window's end makes it. Callers hold c.mu, in a journal transaction.
func (s *Service) autoReceipts(c *conv) chat.Out {
	if len(c.r.Fresh()) == 0 {
		return chat.Out{}
	}
	c.rc.owed = true
	if c.rc.open[window(chat.Delivered)] != nil {
		return chat.Out{}
	}
	return s.makeReceipt(c, chat.Delivered)
}

// makeReceipt makes what is owed of level now, and opens its window if it
// made an op. Callers hold c.mu, in a journal transaction.
func (s *Service) makeReceipt(c *conv, level int) chat.Out {
	var out chat.Out
	var err error
	switch level {
	case chat.Delivered:
		if !c.rc.owed {
			return out
		}
		c.rc.owed = false
		out, err = c.r.Receipt(chat.Delivered)
	case chat.Read:
		if len(c.rc.reads) == 0 {
			return out
		}
		msgs := c.rc.reads
		c.rc.reads = nil
		out, err = c.r.Receipt(chat.Read, msgs...)
	}
	if err != nil {
		s.log.Debug("receipt not made", "level", level, "err", err)
	}
	if len(out.Envelopes) > 0 {
		s.openWindow(c, level)
	}
	return out
}

// openWindow starts level's window: at its end, what was owed meanwhile
// goes in one receipt. The timer is the Service's: Close stops it and
// waits for one already firing. Callers hold c.mu.
func (s *Service) openWindow(c *conv, level int) {
	d := s.cfg.ReceiptWindow
	if d < 0 || s.closed.Load() {
		return
	}
	if d == 0 {
		d = ReceiptWindow
	}
	s.timers.Add(1)
	c.rc.open[window(level)] = time.AfterFunc(d, func() {
		defer s.timers.Done()
		s.windowEnd(c, level)
	})
}

// windowEnd makes, saves and publishes the receipt owed when level's
// window ends.
func (s *Service) windowEnd(c *conv, level int) {
	c.mu.Lock()
	c.rc.open[window(level)] = nil
	if s.closed.Load() {
		c.mu.Unlock()
		return
	}
	c.j.begin()
	out := s.makeReceipt(c, level)
	saved := s.persist(c) == nil
	id := c.r.ID()
	c.mu.Unlock()
	if saved && len(out.Envelopes) > 0 {
		s.publishReceipts(c, out)
		s.events.emit(Event{Kind: EventMessage, Conversation: id, Ops: []crdt.OpID{out.ID}})
	}
}

// stopWindows stops every receipt window and waits for those firing. What
// a window still owed (messages delivered or read while it was open) is
// made now and saved, not published: the device closes its mesh before
// its conversations, and nothing after a restart would make it again (no
// batch brings those messages twice), so peers get it by sync instead.
func (s *Service) stopWindows() {
	s.closed.Store(true)
	for _, c := range s.all() {
		c.mu.Lock()
		for i, t := range c.rc.open {
			if t != nil && t.Stop() {
				s.timers.Done()
			}
			c.rc.open[i] = nil
		}
		if c.rc.owed || len(c.rc.reads) > 0 {
			c.j.begin()
			s.makeReceipt(c, chat.Delivered) // no window opens: closed is set
			s.makeReceipt(c, chat.Read)
			if err := s.persist(c); err != nil {
				s.log.Warn("owed receipt not saved", "err", err)
			}
		}
		c.mu.Unlock()
	}
	s.timers.Wait()
}
