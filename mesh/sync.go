package mesh

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/internal/streams"
)

// Protocols.
const (
	ProtoSync = "/medmesh/sync/1"
	ProtoHeld = "/medmesh/held/1"
)

// Stream limits.
const (
	frameTimeout = 10 * time.Second
	syncTimeout  = 2 * time.Minute
	maxFrame     = 8 << 20
	fetchBatch   = 2048
	maxTags      = 4096
)

// Frame kinds.
const (
	fOffer uint8 = 1
	fRecon uint8 = 2
	fWant  uint8 = 3
	fEnvs  uint8 = 4
	fDone  uint8 = 5
)

type frame struct {
	Kind uint8    `cbor:"1,keyasint"`
	Tags [][]byte `cbor:"2,keyasint,omitempty"`
	Tag  []byte   `cbor:"3,keyasint,omitempty"`
	Msg  []byte   `cbor:"4,keyasint,omitempty"`
	IDs  [][]byte `cbor:"5,keyasint,omitempty"`
	Envs [][]byte `cbor:"6,keyasint,omitempty"`
}

type conn struct {
	s    network.Stream
	r    msgio.ReadCloser
	w    msgio.WriteCloser
	sent *atomic.Int64
}

func (s *Service) newConn(st network.Stream) *conn {
	return &conn{s: st, r: msgio.NewVarintReaderSize(st, maxFrame), w: msgio.NewVarintWriter(st), sent: &s.sent}
}

func (c *conn) send(f frame) error {
	b, err := detcbor.Marshal(f)
	if err != nil {
		return err
	}
	c.s.SetWriteDeadline(time.Now().Add(frameTimeout))
	c.sent.Add(int64(len(b)))
	return c.w.WriteMsg(b)
}

func (c *conn) recv() (frame, error) {
	c.s.SetReadDeadline(time.Now().Add(frameTimeout))
	b, err := c.r.ReadMsg()
	if err != nil {
		return frame{}, err
	}
	defer c.r.ReleaseMsg(b)
	var f frame
	if err := detcbor.Unmarshal(b, &f, maxFrame); err != nil {
		return frame{}, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	if len(f.Tags) > maxTags || len(f.IDs) > fetchBatch || len(f.Envs) > fetchBatch {
		return frame{}, fmt.Errorf("%w: frame too large", ErrProtocol)
	}
	return f, nil
}

// inboxTag is the carrier tag of a device's inbox.
func inboxTag(id peer.ID) []byte {
	sum := sha256.Sum256(append([]byte("medmesh inbox\x00"), id...))
	return sum[:16]
}

// tags lists what this device holds: its conversations, its inbox, and
// (on an anchor) every tag it carries.
func (s *Service) tags() [][]byte {
	out := append([][]byte{inboxTag(s.cfg.Node.ID())}, s.h.Tags()...)
	s.mu.Lock()
	for _, c := range s.carried {
		out = append(out, c.tag)
	}
	s.mu.Unlock()
	slices.SortFunc(out, bytes.Compare)
	return slices.CompactFunc(out, bytes.Equal)
}

// IDsOf is the op-ID set of a tag this device holds or carries (what it
// offers in sync).
func (s *Service) IDsOf(tag []byte) []crdt.OpID {
	out := s.h.IDs(tag)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.carried[hex.EncodeToString(tag)]; c != nil {
		out = append(out, c.list()...)
	}
	return out
}

// envelopes returns the wanted envelopes this device holds or carries.
func (s *Service) envelopes(tag []byte, wanted [][]byte) [][]byte {
	ids := make([]crdt.OpID, 0, len(wanted))
	for _, b := range wanted {
		if id, err := crdt.OpIDFromBytes(b); err == nil {
			ids = append(ids, id)
		}
	}
	out := s.h.Envelopes(tag, ids)
	s.mu.Lock() // the carried index changes as envelopes are kept and dropped
	defer s.mu.Unlock()
	if c := s.carried[hex.EncodeToString(tag)]; c != nil {
		for _, id := range ids {
			if raw, ok := c.get(s.ctx, s.cfg.Store, id); ok {
				out = append(out, raw)
			}
		}
	}
	return out
}

// accept adopts tags a peer offers (anchors carry everything offered).
func (s *Service) accept(tags [][]byte) {
	if !s.cfg.Anchor {
		return
	}
	for _, t := range tags {
		if len(t) == 16 {
			s.carrier(t)
		}
	}
}

func shared(a, b [][]byte) [][]byte {
	in := make(map[string]bool, len(b))
	for _, t := range b {
		in[string(t)] = true
	}
	var out [][]byte
	for _, t := range a {
		if in[string(t)] {
			out = append(out, t)
		}
	}
	return out
}

// kickDelay gathers a burst of local ops into one sync round.
const kickDelay = 300 * time.Millisecond

// fullEvery: one anti-entropy round in this many syncs with every peer even
// if nothing changed here since the last sync with it (a lost or cut-short
// sync is retried at once anyway, since it leaves no record).
const fullEvery = 10

func (s *Service) syncLoop() {
	t := time.NewTicker(s.cfg.SyncEvery)
	defer t.Stop()
	for round := 1; ; round++ {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.kicks:
			select {
			case <-time.After(s.cfg.KickDelay):
			case <-s.ctx.Done():
				return
			}
		}
		s.syncAll(round%fullEvery == 0)
	}
}

// syncAll syncs with every admitted peer — unless (full unset) nothing
// changed here since our last complete sync with it: what changed there
// since, its own loop brings us, so an idle mesh stays quiet.
func (s *Service) syncAll(full bool) {
	for _, p := range s.duePeers(full) {
		if s.cfg.Node.IsAdmitted(p) {
			s.goOwned(func() { s.syncWith(p) })
		}
	}
}

// duePeers lists the connected peers to sync with this round, forgetting
// the sync records of peers gone.
func (s *Service) duePeers(full bool) []peer.ID {
	peers := s.cfg.Node.Host().Network().Peers()
	s.mu.Lock()
	defer s.mu.Unlock()
	live := make(map[peer.ID]uint64, len(peers))
	var due []peer.ID
	for _, p := range peers {
		at, ok := s.synced[p]
		if ok {
			live[p] = at
		}
		if full || !ok || at != s.changes {
			due = append(due, p)
		}
	}
	s.synced = live
	return due
}

// SyncWith reconciles every shared tag with p (initiator side).
func (s *Service) syncWith(p peer.ID) {
	s.mu.Lock()
	if s.syncing[p] {
		s.mu.Unlock()
		return
	}
	s.syncing[p] = true
	before := s.changes
	s.mu.Unlock()
	// Again at once while a round left part of what it fetched unapplied
	// but made progress: a batch out of causal order overflows the DAG's
	// bounded buffer of ops waiting for their dependencies, and the next
	// round brings what was dropped (not the next period).
	more, err := s.initiate(p)
	for i := 0; more && err == nil && i < maxRounds; i++ {
		more, err = s.initiate(p)
	}
	s.mu.Lock()
	delete(s.syncing, p)
	if err == nil {
		s.synced[p] = before
	}
	s.mu.Unlock()
	if err != nil && s.ctx.Err() == nil {
		s.log.Debug("sync failed", "remote", p.String(), "err", err)
	}
}

// maxRounds bounds the extra sync rounds with one peer that a partly
// applied fetch calls for.
const maxRounds = 16

// initiate runs one sync round with p; more reports that a tag's fetch made
// progress yet left envelopes unapplied (another round would bring them).
func (s *Service) initiate(p peer.ID) (more bool, err error) {
	ctx, cancel := context.WithTimeout(s.ctx, syncTimeout)
	defer cancel()
	st, err := s.cfg.Node.Host().NewStream(ctx, p, ProtoSync)
	if err != nil {
		return false, err
	}
	defer st.Close()
	defer streams.Bound(ctx, st, syncTimeout)()
	c := s.newConn(st)
	if err := c.send(frame{Kind: fOffer, Tags: s.tags()}); err != nil {
		return false, err
	}
	f, err := c.recv()
	if err != nil || f.Kind != fOffer {
		return false, fmt.Errorf("%w: expected offer", ErrProtocol)
	}
	s.accept(f.Tags)
	common := shared(s.tags(), f.Tags)
	s.log.Debug("sync: offers exchanged", "remote", p.String(), "shared", len(common))
	for _, tag := range common {
		partial, err := s.reconcileTag(c, p, tag)
		if err != nil {
			st.Reset()
			return false, err
		}
		more = more || partial
	}
	return more, c.send(frame{Kind: fDone})
}

// reconcileTag runs one tag as initiator: reconcile, fetch our needs, serve
// theirs. partial: what it fetched was applied in part only.
func (s *Service) reconcileTag(c *conn, p peer.ID, tag []byte) (partial bool, err error) {
	sess := NewSession(s.IDsOf(tag))
	m, err := sess.Initiate()
	if err != nil {
		return false, err
	}
	for m != nil {
		if err := c.send(frame{Kind: fRecon, Tag: tag, Msg: m}); err != nil {
			return false, err
		}
		f, err := c.recv()
		if err != nil || f.Kind != fRecon || !bytes.Equal(f.Tag, tag) {
			return false, fmt.Errorf("%w: expected recon", ErrProtocol)
		}
		if len(f.Msg) == 0 {
			break
		}
		if m, err = sess.Reply(f.Msg); err != nil {
			return false, err
		}
		if m == nil {
			if err := c.send(frame{Kind: fRecon, Tag: tag}); err != nil {
				return false, err
			}
		}
	}
	need := sess.Need()
	s.log.Debug("sync: reconciled", "remote", p.String(), "tag", hex.EncodeToString(tag), "need", len(need))
	// Only a fetch of several batches can leave ops unapplied for want of
	// dependencies in a later batch: count what it applied then.
	held := 0
	if len(need) > fetchBatch {
		held = len(s.IDsOf(tag))
	}
	if err := s.fetch(c, p, tag, need); err != nil {
		return false, err
	}
	if len(need) > fetchBatch {
		got := len(s.IDsOf(tag)) - held
		partial = got > 0 && got < len(need)
	}
	return partial, s.serve(c, tag)
}

// fetch asks for needed envelopes in batches and applies them, keeping
// two requests in flight so the peer prepares the next batch while this
// side verifies the last.
func (s *Service) fetch(c *conn, p peer.ID, tag []byte, need []crdt.OpID) error {
	var batches [][]crdt.OpID
	for len(need) > 0 {
		n := min(len(need), fetchBatch)
		batches = append(batches, need[:n])
		need = need[n:]
	}
	want := func(b []crdt.OpID) error {
		f := frame{Kind: fWant, Tag: tag}
		for _, id := range b {
			f.IDs = append(f.IDs, slices.Clone(id[:]))
		}
		return c.send(f)
	}
	const inFlight = 2
	sent := 0
	for ; sent < min(inFlight, len(batches)); sent++ {
		if err := want(batches[sent]); err != nil {
			return err
		}
	}
	for range batches {
		got, err := c.recv()
		if err != nil || got.Kind != fEnvs {
			return fmt.Errorf("%w: expected envelopes", ErrProtocol)
		}
		if sent < len(batches) {
			if err := want(batches[sent]); err != nil {
				return err
			}
			sent++
		}
		s.apply(tag, got.Envs, p)
	}
	return c.send(frame{Kind: fWant, Tag: tag}) // no more wants
}

// serve answers wants until the other side says it wants nothing more.
func (s *Service) serve(c *conn, tag []byte) error {
	for {
		f, err := c.recv()
		if err != nil || f.Kind != fWant || !bytes.Equal(f.Tag, tag) {
			return fmt.Errorf("%w: expected want", ErrProtocol)
		}
		if len(f.IDs) == 0 {
			return nil
		}
		if err := c.send(frame{Kind: fEnvs, Tag: tag, Envs: s.envelopes(tag, f.IDs)}); err != nil {
			return err
		}
	}
}

// apply checks fetched envelopes — the senders, then every signature in
// one batch (signatures dominate the receive path) — and delivers them in
// the order they came (causal where the peer knew it: the DAG buffers the
// rest until their dependencies arrive).
func (s *Service) apply(tag []byte, envs [][]byte, from peer.ID) {
	var pending []*e2e.Envelope
	var raws [][]byte
	for _, raw := range envs {
		e, err := e2e.Decode(raw)
		if err == nil {
			err = s.checkSender(e, true)
		}
		if err != nil {
			s.log.Debug("fetched envelope refused", "from", from.String(), "err", err)
			continue
		}
		pending, raws = append(pending, e), append(raws, raw)
	}
	ok := make([]Checked, 0, len(pending))
	for i, err := range e2e.VerifyBatch(pending) {
		if err != nil {
			s.log.Debug("fetched envelope refused", "from", from.String(), "err", err)
			continue
		}
		ok = append(ok, Checked{pending[i], raws[i]})
	}
	s.deliver(tag, ok, from)
}

// handleSync is the responder side.
func (s *Service) handleSync(st network.Stream) {
	defer st.Close()
	defer streams.Bound(s.ctx, st, syncTimeout)()
	p := st.Conn().RemotePeer()
	c := s.newConn(st)
	f, err := c.recv()
	if err != nil || f.Kind != fOffer {
		s.log.Info("sync: bad opening from peer", "remote", p.String())
		st.Reset()
		return
	}
	s.accept(f.Tags)
	if err := c.send(frame{Kind: fOffer, Tags: s.tags()}); err != nil {
		return
	}
	sessions := map[string]*Session{}
	for {
		f, err := c.recv()
		if err != nil {
			s.log.Info("sync: cut off", "remote", p.String(), "err", err)
			st.Reset()
			return
		}
		key := hex.EncodeToString(f.Tag)
		switch f.Kind {
		case fDone:
			return
		case fRecon:
			sess := sessions[key]
			if sess == nil {
				sess = NewSession(s.IDsOf(f.Tag))
				sessions[key] = sess
			}
			if len(f.Msg) == 0 {
				continue
			}
			out, err := sess.Reply(f.Msg)
			if err != nil {
				s.log.Info("sync: protocol violation", "remote", p.String(), "err", err)
				st.Reset()
				return
			}
			if err := c.send(frame{Kind: fRecon, Tag: f.Tag, Msg: out}); err != nil {
				return
			}
		case fWant:
			if len(f.IDs) > 0 {
				if err := c.send(frame{Kind: fEnvs, Tag: f.Tag, Envs: s.envelopes(f.Tag, f.IDs)}); err != nil {
					return
				}
				continue
			}
			// Their wants are served; now ours.
			var need []crdt.OpID
			if sess := sessions[key]; sess != nil {
				need = sess.Need()
			}
			if err := s.fetch(c, p, f.Tag, need); err != nil {
				st.Reset()
				return
			}
		default:
			st.Reset()
			return
		}
	}
}

// gate serves only admitted peers, waiting for a decision in progress.
func (s *Service) gate(h network.StreamHandler) network.StreamHandler {
	return func(st network.Stream) {
		ctx, cancel := context.WithTimeout(s.ctx, 7*time.Second)
		defer cancel()
		if !s.cfg.Node.AwaitAdmitted(ctx, st.Conn().RemotePeer()) {
			st.Reset()
			return
		}
		h(st)
	}
}

// handleHeld takes an acknowledgement that another node stored our ops.
func (s *Service) handleHeld(st network.Stream) {
	defer st.Close()
	c := s.newConn(st)
	f, err := c.recv()
	if err != nil {
		return
	}
	var ids []crdt.OpID
	for _, b := range f.IDs {
		if id, err := crdt.OpIDFromBytes(b); err == nil {
			ids = append(ids, id)
		}
	}
	if len(ids) > 0 {
		s.h.Held(f.Tag, ids, st.Conn().RemotePeer())
	}
}

func (s *Service) ackHeld(to peer.ID, tag []byte, id crdt.OpID) {
	ctx, cancel := context.WithTimeout(s.ctx, frameTimeout)
	defer cancel()
	st, err := s.cfg.Node.Host().NewStream(ctx, to, ProtoHeld)
	if err != nil {
		return
	}
	defer st.Close()
	s.newConn(st).send(frame{Kind: fWant, Tag: tag, IDs: [][]byte{id[:]}})
}
