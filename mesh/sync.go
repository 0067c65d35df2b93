package mesh

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
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

// Protocols. sync/8 is sync/7 with reconciliation in causal-key order
// (recon.go): ranges and their bounds follow the items' keys, then IDs,
// so what two sides lack of each other lies together at the end and
// costs lists of about itself (bounds grow from 32 to 40 bytes). sync/7
// is sync/6 with urgent sessions (sites.go,
// urgentSites): an offer may say it opens one (key 14), listing only the
// tags its side just took urgent ops in for, in one page of at most
// urgentSessionTags; the answer lists only those of them the responder
// holds. For each that differs the initiator lists those urgent ops (a
// recon frame with at most urgentFirst IDs and no message) instead of
// reconciling; the responder fetches those it lacks and their missing
// direct dependencies (one more batch), waiting on no other session's
// claims. Both sides pace the session's first urgentCtrlBytes of control
// frames urgent on a site link (sync/6 nodes refuse the key as unknown). sync/6 is sync/5 for envelopes that may carry the signed
// urgency bit (e2e.Envelope.Urgent: sync/5 nodes refuse them as malformed),
// with listed keys that carry it (recon.go: urgent first) and without the
// hand phase's per-entry urgent flag (the header says it). sync/5 is
// sync/4 with carried envelopes handed to members in the hand phase
// (carry.go): a carrier offers the tags it carries only to
// anchors, and hands a peer offering one of them (or an anchor) what it
// carries of it, listing each envelope to each peer once, instead of
// reconciling the tag whenever it took something new. sync/4 is sync/3
// with carriage by non-members: an
// offer says whether its side carries for others, and after the tags the
// initiator may open a hand phase in which each side hands the other, if
// it carries, envelopes to carry with their copy counts. sync/3 carries each listed op ID's causal key in
// reconciliation (recon.go), so a fetch of many batches brings
// dependencies first; its limits and budgets are sync/2's. sync/2 pages
// the tag offer and budgets each session (see below); sync/1 sent the
// whole offer in one frame of at most 4,096 tags.
const (
	ProtoSync = "/medmesh/sync/8"
	ProtoHeld = "/medmesh/held/1"
)

// Stream limits.
const (
	frameTimeout = 10 * time.Second
	syncTimeout  = 2 * time.Minute
	maxFrame     = 8 << 20
	fetchBatch   = 2048
	// askBatch is how many ops a fetch asks for in one want (and
	// applyQueue how many checked batches may wait to be applied): small
	// enough that receiving, checking and applying overlap from the
	// first batch on, large enough that a round trip is not paid per op.
	askBatch   = 128
	applyQueue = 4
	keepOut    = 512 << 10 // the largest send buffer a conn keeps
	tagLen     = 16
	fpLen      = 16
)

// Limits of one sync session (both sides enforce them on what they read;
// a peer past one has its stream reset).
//
// Offer: the tags a side holds go in pages of offerPage tags (every page
// but the last full), strictly ascending, 16 bytes each, at most
// maxOfferTags in all (64 pages, 1 MiB of tags).
//
// Reconciliation: only tags both sides offered, each at most once, one at
// a time (recon, then wants, then done); at most MaxRounds recon frames for
// one tag (the initiator ends a tag's reconciliation there, fetches what
// it learnt and goes on in another round) and
// roundsBase+roundsPerTag×shared for the session (an equal tag takes one,
// a difference of d among n IDs about log16(n)); the initiator stops
// starting tags before it could exceed that and syncs the rest in another
// round. A peer may want at most as many IDs of a tag as we hold of
// it. Offers, recon and want frames read in one session total at most
// maxCtrlBytes (envelopes fetched are bounded by what we asked for).
const (
	offerPage    = 1024
	maxOfferTags = 1 << 16
	roundsBase   = 64
	roundsPerTag = 4
	maxCtrlBytes = 64 << 20
)

// Frame kinds.
const (
	fOffer uint8 = 1
	fRecon uint8 = 2
	fWant  uint8 = 3
	fEnvs  uint8 = 4
	fDone  uint8 = 5
	fHand  uint8 = 6 // sync/4: envelopes to carry, offered (tag and ID each) with copies
	fTake  uint8 = 7 // sync/4: the ones taken, then the ones kept
)

type frame struct {
	Kind uint8    `cbor:"1,keyasint"`
	Tags [][]byte `cbor:"2,keyasint,omitempty"`
	Tag  []byte   `cbor:"3,keyasint,omitempty"`
	Msg  []byte   `cbor:"4,keyasint,omitempty"`
	IDs  [][]byte `cbor:"5,keyasint,omitempty"`
	Envs [][]byte `cbor:"6,keyasint,omitempty"`
	More bool     `cbor:"7,keyasint,omitempty"` // offer: another page follows
	FPs  [][]byte `cbor:"8,keyasint,omitempty"` // offer: each tag's op-ID set fingerprint
	// sync/4. Carry (offer): this side carries envelopes of others'
	// conversations. Hand (hand, take): entries of a tag and an op ID
	// (handLen bytes each). Copies (hand): per entry, the copies handed
	// with it — handover metadata outside the signed envelope. (Key 12,
	// sync/4 and sync/5's per-entry urgent flag, is gone in sync/6: the
	// envelope's signed header says which ops are urgent.)
	Carry  bool     `cbor:"9,keyasint,omitempty"`
	Hand   [][]byte `cbor:"10,keyasint,omitempty"`
	Copies []uint32 `cbor:"11,keyasint,omitempty"`
	// Only (offer, to an anchor): the tags of this page that its side
	// carries only (it fetches nothing of them, and hands them; see
	// skipCarried).
	Only [][]byte `cbor:"13,keyasint,omitempty"`
	// Urgent (offer, sync/7): this offer opens an urgent session.
	Urgent bool `cbor:"14,keyasint,omitempty"`
}

// decodeFrame parses one sync (or held) frame and checks its shape: a
// known kind, a 16-byte tag (or none), at most a page of 16-byte tags and
// a batch of 32-byte IDs or envelopes.
func decodeFrame(b []byte) (frame, error) {
	if len(b) > maxFrame {
		return frame{}, fmt.Errorf("%w: frame of %d bytes", ErrProtocol, len(b))
	}
	f, err := readFrame(b)
	if err != nil {
		return frame{}, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	scratch := reencodeBufs.Get().(*[]byte)
	defer reencodeBufs.Put(scratch)
	if *scratch = appendFrame((*scratch)[:0], &f); !bytes.Equal(*scratch, b) {
		return frame{}, fmt.Errorf("%w: %v", ErrProtocol, detcbor.ErrNotCanonical)
	}
	if err := f.check(); err != nil {
		return frame{}, err
	}
	return f, nil
}

// check checks a decoded frame's shape (decodeFrame).
func (f *frame) check() error {
	switch {
	case f.Kind < fOffer || f.Kind > fTake:
		return fmt.Errorf("%w: frame kind %d", ErrProtocol, f.Kind)
	case len(f.Tags) > offerPage || len(f.IDs) > fetchBatch || len(f.Envs) > fetchBatch:
		return fmt.Errorf("%w: frame too large", ErrProtocol)
	case len(f.Tag) != 0 && len(f.Tag) != tagLen:
		return fmt.Errorf("%w: tag of %d bytes", ErrProtocol, len(f.Tag))
	case f.Kind != fOffer && (f.More || len(f.Tags) > 0 || len(f.FPs) > 0 || f.Carry || len(f.Only) > 0 || f.Urgent):
		return fmt.Errorf("%w: offer fields in a frame that is no offer", ErrProtocol)
	case len(f.Only) > len(f.Tags):
		return fmt.Errorf("%w: offer fields in a frame that is no offer", ErrProtocol)
	case f.Urgent && (f.More || len(f.Tags) > urgentSessionTags):
		return fmt.Errorf("%w: an urgent offer of more than %d tags", ErrProtocol, urgentSessionTags)
	case f.Kind != fHand && f.Kind != fTake && len(f.Hand) > 0:
		return fmt.Errorf("%w: hand entries in a frame that is no hand", ErrProtocol)
	case f.Kind != fHand && len(f.Copies) > 0:
		return fmt.Errorf("%w: copies in a frame that is no hand", ErrProtocol)
	case len(f.Hand) > maxHand:
		return fmt.Errorf("%w: hand too large", ErrProtocol)
	case f.Kind == fHand && len(f.Copies) != len(f.Hand):
		return fmt.Errorf("%w: %d copies for %d entries", ErrProtocol, len(f.Copies), len(f.Hand))
	case len(f.FPs) != len(f.Tags):
		return fmt.Errorf("%w: %d fingerprints for %d tags", ErrProtocol, len(f.FPs), len(f.Tags))
	}
	for _, h := range f.Hand {
		if len(h) != handLen {
			return fmt.Errorf("%w: hand entry of %d bytes", ErrProtocol, len(h))
		}
	}
	for _, n := range f.Copies {
		if n == 0 {
			return fmt.Errorf("%w: no copies handed", ErrProtocol)
		}
	}
	for _, fp := range f.FPs {
		if len(fp) != fpLen {
			return fmt.Errorf("%w: fingerprint of %d bytes", ErrProtocol, len(fp))
		}
	}
	for _, t := range f.Tags {
		if len(t) != tagLen {
			return fmt.Errorf("%w: offered tag of %d bytes", ErrOfferTooLarge, len(t))
		}
	}
	for _, id := range f.IDs {
		if len(id) != len(crdt.OpID{}) {
			return fmt.Errorf("%w: op ID of %d bytes", ErrProtocol, len(id))
		}
	}
	return nil
}

type conn struct {
	svc  *Service
	p    peer.ID // the other side
	site bool    // p is a site peer: every frame paced, bytes counted
	// urgent: an urgent session (sync/7): its first urgentCtrlBytes of
	// control frames paced urgent, only urgent ops fetched, no claim
	// waited on.
	urgent     bool
	urgentCtrl int // bytes of control frames sent paced urgent
	kind       int // an inbound session's kind (classify)
	s          network.Stream
	r          msgio.ReadCloser
	out        []byte // the frame being sent, kept for the next (one goroutine sends on a conn)
	sent       *atomic.Int64
	ctrl       int64 // bytes of offer, recon and want frames read
}

func (s *Service) newConn(st network.Stream) *conn {
	p := st.Conn().RemotePeer()
	c := &conn{svc: s, p: p, site: s.sitePeer(p), s: st, sent: &s.sent}
	if c.site {
		c.r = msgio.NewVarintReaderSize(siteReader{st}, maxFrame)
	} else {
		c.r = msgio.NewVarintReaderSize(st, maxFrame)
	}
	return c
}

// encodeFrame is a frame's wire form (deterministic CBOR).
func encodeFrame(f frame) ([]byte, error) { return appendFrame(make([]byte, 0, frameLen(&f)), &f), nil }

// drainChecked appends to ok the batches already queued in checked,
// without waiting, up to fetchBatch envelopes.
func drainChecked(checked <-chan []Checked, ok []Checked) []Checked {
	for len(ok) < fetchBatch {
		select {
		case more, open := <-checked:
			if !open {
				return ok
			}
			ok = append(ok, more...)
		default:
			return ok
		}
	}
	return ok
}

// reencodeBufs hold the re-encodings decodeFrame compares with what it
// read (frames of up to maxFrame bytes; kept between frames, not made
// for each).
var reencodeBufs = sync.Pool{New: func() any { return new([]byte) }}

func (c *conn) send(f frame) error {
	// The frame is written after room for its length prefix in a buffer
	// the conn keeps (up to keepOut bytes: a session that stalls after a
	// large answer pins no more), and goes out with the prefix in one
	// write.
	const room = binary.MaxVarintLen64
	c.out = appendFrame(slices.Grow(c.out[:0], room+frameLen(&f))[:room], &f)
	defer func() {
		if cap(c.out) > keepOut {
			c.out = nil
		}
	}()
	b := c.out[room:]
	wire := c.out[room-uvarintLen(uint64(len(b))):]
	binary.PutUvarint(wire, uint64(len(b)))
	if c.site {
		// Every frame to a site peer is paced, control frames too: an
		// offer lists every tag held (sites.go).
		c.svc.countSent(&f, len(b))
		urgent := 0 // bytes of the frame paced urgent
		switch {
		case f.Kind == fEnvs && c.svc.urgentIn(f.Envs):
			urgent = math.MaxInt
		case c.urgent && f.Kind != fEnvs:
			urgent = min(len(b), urgentCtrlBytes-c.urgentCtrl)
			c.urgentCtrl += urgent
		}
		return c.sendPaced(wire, len(wire)-len(b), urgent)
	}
	c.svc.countSent(&f, len(b))
	c.s.SetWriteDeadline(time.Now().Add(frameTimeout))
	c.sent.Add(int64(len(b)))
	_, err := c.s.Write(wire)
	return err
}

// uvarintLen is the length of n as an unsigned varint.
func uvarintLen(n uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], n)
}

func (c *conn) recv() (frame, error) {
	c.s.SetReadDeadline(time.Now().Add(c.frameTimeout()))
	b, err := c.r.ReadMsg()
	if err != nil {
		return frame{}, err
	}
	defer c.r.ReleaseMsg(b)
	if c.site {
		c.svc.cfg.Links.SiteReceived(c.p, len(b))
	}
	f, err := decodeFrame(b)
	if err != nil {
		return frame{}, err
	}
	if f.Kind != fEnvs {
		if c.ctrl += int64(len(b)); c.ctrl > maxCtrlBytes {
			return frame{}, fmt.Errorf("%w: more than %d bytes of control frames", ErrBudget, maxCtrlBytes)
		}
	}
	return f, nil
}

// offer is what one side of a session holds: its tags (sorted, unique)
// and, for each, the fingerprint of its op-ID set.
type offer struct {
	tags, fps [][]byte
	carry     bool            // sync/4: it carries for others
	only      map[string]bool // sync/4: tags it carries only
	urgent    bool            // sync/7: it opens an urgent session
}

// offer lists what this device holds, with fingerprints, for peer p: the
// tags it carries only are offered to anchors alone (which adopt them);
// others get what it carries of their tags in the hand phase. keep, if
// not nil, limits it to the tags it holds (before any fingerprint).
func (s *Service) offer(p peer.ID, keep func(tag []byte) bool) offer {
	o := offer{tags: s.tags(), carry: s.carries(), only: s.carriedOnly()}
	if keep != nil {
		o.tags = slices.DeleteFunc(o.tags, func(t []byte) bool { return !keep(t) })
	}
	if len(o.only) > 0 && !s.isAnchor(p) {
		o.tags = slices.DeleteFunc(o.tags, func(t []byte) bool { return o.only[string(t)] })
		o.only = nil
	}
	o.fps = make([][]byte, len(o.tags))
	for i, t := range o.tags {
		o.fps[i] = s.fingerprintOf(t, s.IDsOf(t))
	}
	return o
}

// fingerprintOf is Fingerprint(ids), ids being tag's IDsOf: kept per tag
// while IDsOf gives the very same slice (a holder shares its set until it
// changes, and the kept slice, held here, cannot be freed and its memory
// reused), so a device offering a busy conversation to peer after peer
// sums its IDs once per change, not once per session.
func (s *Service) fingerprintOf(tag []byte, ids []crdt.OpID) []byte {
	s.mu.Lock()
	c, ok := s.fps[string(tag)]
	s.mu.Unlock()
	if ok && sameSlice(c.ids, ids) {
		return c.fp
	}
	fp := Fingerprint(ids) // not under mu: a sum over the whole set
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.fps) >= maxKeptFPs || s.fps == nil {
		s.fps = map[string]keptFP{}
	}
	s.fps[string(tag)] = keptFP{ids, fp}
	return fp
}

// maxKeptFPs bounds the tags whose fingerprints are kept: a phone's
// conversations, each pinning at most the one set of its last offer (an
// anchor with more tags than this sums them at every offer, as before).
const maxKeptFPs = 64

// keptFP is a tag's ID set and its fingerprint (fingerprintOf).
type keptFP struct {
	ids []crdt.OpID
	fp  []byte
}

// sameSlice reports whether a and b are the same slice: same length, same
// first element.
func sameSlice(a, b []crdt.OpID) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// sendOffer sends an offer in pages.
func (c *conn) sendOffer(o offer) error {
	tags, fps := o.tags, o.fps
	for {
		n := min(len(tags), offerPage)
		f := frame{Kind: fOffer, Tags: tags[:n], FPs: fps[:n], More: n < len(tags), Carry: o.carry, Urgent: o.urgent}
		for _, t := range f.Tags {
			if o.only[string(t)] {
				f.Only = append(f.Only, t)
			}
		}
		if err := c.send(f); err != nil {
			return err
		}
		if tags, fps = tags[n:], fps[n:]; !f.More {
			return nil
		}
	}
}

// recvOffer reads an offer's pages.
func (c *conn) recvOffer() (offer, error) { return c.recvOfferThen(nil) }

// recvOfferThen reads an offer's pages; first, if not nil, is told after
// the first page whether the offer opens an urgent session, and may end
// the session.
func (c *conn) recvOfferThen(first func(urgent bool) error) (offer, error) {
	var out offer
	for {
		f, err := c.recv()
		if err != nil {
			return offer{}, err
		}
		if f.Kind != fOffer {
			return offer{}, fmt.Errorf("%w: expected offer", ErrProtocol)
		}
		if first != nil {
			if err := first(f.Urgent); err != nil {
				return offer{}, err
			}
			first = nil
		}
		out.carry = out.carry || f.Carry
		if f.Urgent && len(out.tags) > 0 {
			return offer{}, fmt.Errorf("%w: an urgent offer of more than one page", ErrProtocol)
		}
		out.urgent = f.Urgent
		for _, t := range f.Only {
			if !slices.ContainsFunc(f.Tags, func(x []byte) bool { return bytes.Equal(x, t) }) {
				return offer{}, fmt.Errorf("%w: a tag carried only that is not offered", ErrProtocol)
			}
			if out.only == nil {
				out.only = map[string]bool{}
			}
			out.only[string(t)] = true
		}
		if f.More && len(f.Tags) != offerPage {
			return offer{}, fmt.Errorf("%w: a page of %d tags before the last", ErrOfferTooLarge, len(f.Tags))
		}
		if len(out.tags)+len(f.Tags) > maxOfferTags {
			return offer{}, fmt.Errorf("%w: more than %d tags", ErrOfferTooLarge, maxOfferTags)
		}
		for i, t := range f.Tags {
			if n := len(out.tags); n > 0 && bytes.Compare(out.tags[n-1], t) >= 0 {
				return offer{}, fmt.Errorf("%w: tags not ascending", ErrOfferTooLarge)
			}
			out.tags, out.fps = append(out.tags, t), append(out.fps, f.FPs[i])
		}
		if !f.More {
			return out, nil
		}
	}
}

// budget counts the recon frames of one session against its limit.
type budget struct{ rounds, max int }

func newBudget(shared int) *budget { return &budget{max: roundsBase + roundsPerTag*shared} }

// room reports whether a whole tag more fits: the initiator sends at most
// MaxRounds+2 recon frames for one tag (its first, a reply per round, an
// empty last).
func (b *budget) room() bool { return b.rounds+MaxRounds+2 <= b.max }

// spend counts one recon frame.
func (b *budget) spend() error {
	if b.rounds++; b.rounds > b.max {
		return fmt.Errorf("%w: more than %d recon frames", ErrBudget, b.max)
	}
	return nil
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
	out = slices.CompactFunc(out, bytes.Equal)
	if len(out) > maxOfferTags {
		// Not reached in practice (joins and adoptions are capped well
		// below); the tags past the limit are not synced, and say so.
		s.log.Warn("sync: more tags than an offer carries", "tags", len(out), "offered", maxOfferTags)
		out = out[:maxOfferTags]
	}
	return out
}

// IDsOf is the op-ID set of a tag this device holds or carries (what it
// offers in sync), sorted: sessions, claims and the reuse of session items
// rely on it. It may be shared with the holder (SortedHolder): callers
// must not modify it.
func (s *Service) IDsOf(tag []byte) []crdt.OpID {
	out := s.heldIDs(tag)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.carried[hex.EncodeToString(tag)]; c != nil {
		if len(out) == 0 {
			return slices.Clip(c.list()) // a new list is made when the set changes
		}
		// Carried, then joined: the two may share IDs.
		return unionSorted(out, c.list())
	}
	return out
}

// notHeld is the IDs of ids not in held (sorted).
func notHeld(ids, held []crdt.OpID) []crdt.OpID {
	var out []crdt.OpID
	for _, id := range ids {
		if _, ok := slices.BinarySearchFunc(held, id, crdt.OpID.Compare); !ok {
			out = append(out, id)
		}
	}
	return out
}

// unionSorted is the sorted union of a and b, each sorted and without
// repeats (a held tag's IDs, and what is carried of it).
func unionSorted(a, b []crdt.OpID) []crdt.OpID {
	out := make([]crdt.OpID, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		switch c := a[0].Compare(b[0]); {
		case c < 0:
			out, a = append(out, a[0]), a[1:]
		case c > 0:
			out, b = append(out, b[0]), b[1:]
		default:
			out, a, b = append(out, a[0]), a[1:], b[1:]
		}
	}
	return append(append(out, a...), b...)
}

// session starts reconciling a tag over what this device holds or carries
// of it, with causal keys. The sorted items and keys of the tag's last
// session are reused while the tag's IDs are exactly those items (checked
// in full — a compare, where building them sorts the IDs and looks up each
// one's key): a device syncing with each of its peers in turn, or both
// sides of a pair at once, builds them once. At most maxBases tags are
// kept.
func (s *Service) session(tag []byte) *Session {
	ids := s.IDsOf(tag)
	s.mu.Lock()
	base := s.bases[string(tag)]
	s.mu.Unlock()
	if base != nil && (sameSlice(base.items, ids) || slices.Equal(base.items, ids)) {
		sess := base.fork()
		sess.now = s.now
		return sess
	}
	var sess *Session
	if base != nil { // IDs added since: look up only their keys
		sess = base.extend(ids, func(fresh []crdt.OpID) []uint64 { return s.keysOf(tag, fresh) })
	}
	if sess == nil {
		sess = NewKeyedSession(ids, s.keysOf(tag, ids))
	}
	s.mu.Lock()
	if len(s.bases) >= maxBases || s.bases == nil {
		s.bases = map[string]*Session{}
	}
	s.bases[string(tag)] = sess.fork()
	s.mu.Unlock()
	sess.now = s.now
	return sess
}

// maxBases bounds the tags whose session items are kept (an anchor carries
// many; a device syncs a few at a time).
const maxBases = 16

// keysOf gives the causal keys of ids (see e2e.Envelope.SyncKey): the
// holder's, else the carrier's, else 0.
func (s *Service) keysOf(tag []byte, ids []crdt.OpID) []uint64 {
	keys := s.h.Keys(tag, ids)
	if len(keys) != len(ids) {
		keys = make([]uint64, len(ids))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.carried[hex.EncodeToString(tag)]; c != nil {
		for i, id := range ids {
			if h, ok := c.ops[id]; ok && keys[i] == 0 {
				keys[i] = h.key
			}
		}
	}
	return keys
}

// envelopes returns the wanted envelopes this device holds or carries,
// noting for an anchor to which they go which of them are ours (see
// sentLog).
func (s *Service) envelopesFor(to peer.ID, tag []byte, wanted [][]byte) [][]byte {
	out := s.envelopes(tag, wanted)
	s.noteServed(to, out)
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

// differing lists the tags both offers hold whose fingerprints differ:
// the ones to reconcile (both sides compute the same list).
func differing(a, b offer) [][]byte {
	fp := make(map[string][]byte, len(b.tags))
	for i, t := range b.tags {
		fp[string(t)] = b.fps[i]
	}
	var out [][]byte
	for i, t := range a.tags {
		if theirs, ok := fp[string(t)]; ok && !bytes.Equal(theirs, a.fps[i]) {
			out = append(out, t)
		}
	}
	return out
}

// kickDelay gathers a burst of local ops into one sync round.
const kickDelay = 300 * time.Millisecond

// fullEvery: one anti-entropy round in this many counts every peer due even
// if nothing changed here since the last sync with it (a lost or cut-short
// sync leaves no record, so its peer stays due; within a round's fan-out it
// waits for its turn like any other).
const fullEvery = 10

func (s *Service) syncLoop() {
	t := time.NewTicker(s.cfg.SyncEvery)
	defer t.Stop()
	for round := 1; ; round++ {
		periodic := false
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.sweepCarriers(s.now())
			periodic = true
		case <-s.kicks:
			select {
			case <-time.After(s.cfg.KickDelay):
			case <-s.ctx.Done():
				return
			}
		}
		s.syncAll(round%fullEvery == 0, periodic)
	}
}

// syncAll syncs with the admitted peers due (see duePeers): a peer is not
// due if (full unset) nothing changed here since our last complete sync
// with it — what changed there since, its own loop brings us, so an idle
// mesh stays quiet. A periodic round syncs with a few of them in turn; a
// kicked one (an op of ours published, envelopes taken to carry, a site
// change) with all.
func (s *Service) syncAll(full, periodic bool) {
	fanout := 0
	if periodic {
		fanout = syncFanout
	}
	for _, p := range s.duePeers(full, fanout) {
		s.goOwned(func() { s.syncWith(p) })
	}
}

// syncFanout bounds the peers a periodic round syncs with, beyond site
// and federated peers: those synced longest ago go first (see noteTurn),
// so each connected peer is synced at least once in every
// ceil(peers/syncFanout) periods. Gossip is the fast path and
// anti-entropy its safety net: an op gossip dropped on its way to a
// device is held by that device's other peers too, and the device syncs
// with syncFanout of them each period — the classic one-partner-per-round
// anti-entropy converges in a logarithmic number of rounds. Syncing with
// every connected peer whenever anything changed made each device of a
// busy 64-member group run a session with each of its peers every period,
// both ways: over a third of the CPU of BenchmarkFullBasement64. A new
// peer is synced at once on admission and on joining a conversation
// topic; what this device writes (a kicked round) goes to every peer at
// once, so a small conversation in a large mesh does not wait for its
// members' turns.
const syncFanout = 3

// duePeers lists the connected peers to sync with: the site and federated
// peers due, and the others due — at most fanout of them if fanout > 0,
// those synced longest ago first, ties in random order; it forgets the
// sync records of peers gone. Peers sync does not run with (not admitted,
// not federated) are never listed: they would otherwise hold the first
// places for ever. A peer seen for the first time waits behind the others
// (the syncs on its admission and on its joining a topic serve it), and a
// sync we begin counts as a turn whether it completes or not: a malicious
// colleague's devices, reconnecting or cutting sessions short, take no
// more than their turn.
func (s *Service) duePeers(full bool, fanout int) []peer.ID {
	peers, always := s.connected()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.duePeersLocked(peers, full, always, fanout)
}

// connected lists the syncable peers connected and those of them always
// synced when due (site and federated peers): asked of the node without
// mu held.
func (s *Service) connected() (peers []peer.ID, always map[peer.ID]bool) {
	always = map[peer.ID]bool{}
	for _, p := range s.cfg.Node.Host().Network().Peers() {
		if !s.syncable(p) {
			continue
		}
		peers = append(peers, p)
		if s.sitePeer(p) || s.federated(p) {
			always[p] = true
		}
	}
	return peers, always
}

// duePeersLocked is duePeers, given what connected returns; with mu held.
func (s *Service) duePeersLocked(peers []peer.ID, full bool, always map[peer.ID]bool, fanout int) []peer.ID {
	live := make(map[peer.ID]uint64, len(peers))
	turns := make(map[peer.ID]uint64, len(peers))
	var keep, due []peer.ID
	for _, p := range peers {
		at, ok := s.synced[p]
		if ok {
			live[p] = at
		}
		turn, seen := s.lastTurn[p]
		if !seen {
			turn = s.turnSeq
		}
		turns[p] = turn
		switch {
		case !full && ok && at == s.changes:
		case always[p]:
			keep = append(keep, p)
		default:
			due = append(due, p)
		}
	}
	s.synced, s.lastTurn = live, turns
	for p := range s.deferred { // peers gone: no sync with them to redo
		if _, ok := turns[p]; !ok {
			delete(s.deferred, p)
		}
	}
	if fanout > 0 && len(due) > fanout {
		rand.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
		slices.SortStableFunc(due, func(a, b peer.ID) int { return cmp.Compare(turns[a], turns[b]) })
		due = due[:fanout]
	}
	return append(keep, due...)
}

// noteTurn records a sync with p: one we begin (whether it completes or
// not: a peer that cuts its sessions short takes no more of our rounds
// than any other), or one p began and completed. Called with mu held.
func (s *Service) noteTurn(p peer.ID) {
	if s.lastTurn == nil {
		s.lastTurn = map[peer.ID]uint64{}
	}
	s.turnSeq++
	s.lastTurn[p] = s.turnSeq
}

// SyncWith reconciles every shared tag with p (initiator side).
func (s *Service) syncWith(p peer.ID) { s.syncRound(p, false) }

// syncRound is syncWith; again: if a round with p is running, which may
// have begun before what calls for this one (a conversation just joined,
// a peer just subscribed), run once more when it ends. Periodic rounds
// and kicks pass false, so rounds slower than the period never chain.
func (s *Service) syncRound(p peer.ID, again bool) {
	s.mu.Lock()
	if s.syncing[p] {
		if !again {
			s.mu.Unlock()
			return
		}
		if s.rerun == nil {
			s.rerun = map[peer.ID]bool{}
		}
		s.rerun[p] = true
		s.mu.Unlock()
		return
	}
	s.syncing[p] = true
	s.noteTurn(p)
	delete(s.deferred, p)
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
	if err == nil && !s.deferred[p] {
		s.synced[p] = before
	}
	delete(s.deferred, p)
	rerun := s.rerun[p]
	delete(s.rerun, p)
	s.mu.Unlock()
	if err == nil && s.sitePeer(p) {
		s.cfg.Links.SiteSynced(p)
	}
	if err != nil && s.ctx.Err() == nil {
		s.log.Debug("sync failed", "remote", p.String(), "err", err)
	}
	if rerun {
		s.goOwned(func() { s.syncRound(p, false) })
	}
}

// maxRounds bounds the extra sync rounds with one peer that a partly
// applied fetch calls for.
const maxRounds = 16

// initiate runs one sync round with p; more reports that another round
// would bring more: a tag's fetch made progress yet left envelopes
// unapplied, the session budget stopped before every shared tag, or this
// anchor adopted tags p offered.
func (s *Service) initiate(p peer.ID) (more bool, err error) { return s.initiateOnly(p, nil) }

// initiateOnly is initiate; only, if not nil, makes the round an urgent
// session (sync/7) with a site peer (urgentSites): it offers only those
// tags and, for each that differs, busy or not (marking none busy), lists
// the urgent ops noted for it instead of reconciling the tag (listUrgent),
// fetches nothing, and leaves out the hand phase.
func (s *Service) initiateOnly(p peer.ID, only map[string][]crdt.OpID) (more bool, err error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.SessionTimeout)
	defer cancel()
	st, err := s.cfg.Node.Host().NewStream(ctx, p, ProtoSync)
	if err != nil {
		return false, err
	}
	s.sessions.Add(1)
	defer st.Close()
	defer streams.Bound(ctx, st, s.cfg.SessionTimeout)()
	c := s.newConn(st)
	var keep func([]byte) bool
	if only != nil {
		keep = func(t []byte) bool { return len(only[string(t)]) > 0 }
	}
	mine := s.offerFor(p, keep)
	mine.urgent, c.urgent = only != nil, only != nil
	if err := c.sendOffer(mine); err != nil {
		return false, err
	}
	theirs, err := c.recvOffer()
	if err != nil {
		st.Reset()
		return false, err
	}
	theirs = s.offerFrom(p, theirs)
	adopted := s.accept(theirs.tags, p)
	common, skipped := skipCarried(differing(mine, theirs), mine, theirs), false
	if only == nil {
		common, skipped = s.skipBusy(p, common)
		common = s.urgentTagsFirst(p, common)
	}
	if skipped { // another session moves those: this one is no complete sync
		s.mu.Lock()
		if s.deferred == nil {
			s.deferred = map[peer.ID]bool{}
		}
		s.deferred[p] = true
		s.mu.Unlock()
	}
	s.log.Debug("sync: offers exchanged", "remote", p.String(), "shared", len(common))
	b := newBudget(len(common))
	for i, tag := range common {
		if !b.room() {
			s.log.Debug("sync: session budget reached", "remote", p.String(), "left", len(common)-i)
			more = true
			break
		}
		var partial bool
		if only != nil {
			err = s.listUrgent(c, p, tag, only[string(tag)])
		} else {
			partial, err = s.reconcileTag(c, p, tag, b)
		}
		if err != nil {
			st.Reset()
			return false, err
		}
		more = more || partial
	}
	if only == nil && (theirs.carry || mine.carry) {
		// Hand phase (sync/5): we hand them what to carry or what we
		// carry of their tags, then they us.
		if err := s.handTo(c, p, theirs); err != nil {
			st.Reset()
			return false, err
		}
		if err := s.takeFrom(c, p, nil); err != nil {
			st.Reset()
			return false, err
		}
	}
	return more || adopted > 0, c.send(frame{Kind: fDone})
}

// listUrgent runs one tag of an urgent session as initiator: it lists the
// urgent ops noted for it (a recon frame with IDs and no message: at most
// urgentFirst) instead of reconciling the whole tag — whose recon, when a
// backlog has not crossed, is larger than the backlog's IDs — and serves
// what the peer wants of them and of their dependencies (at most
// siteBatch more).
func (s *Service) listUrgent(c *conn, p peer.ID, tag []byte, ids []crdt.OpID) error {
	f := frame{Kind: fRecon, Tag: tag}
	for _, id := range ids {
		f.IDs = append(f.IDs, slices.Clone(id[:]))
	}
	if err := c.send(f); err != nil {
		return err
	}
	return s.serve(c, p, tag, len(ids)+siteBatch)
}

// takeListed runs one tag of an urgent session as responder: the
// initiator listed urgent ops of it (listUrgent); we fetch those we lack
// and their missing direct dependencies (fetch, in urgent mode).
func (s *Service) takeListed(c *conn, p peer.ID, f frame) error {
	if len(f.Msg) != 0 || len(f.IDs) == 0 || len(f.IDs) > urgentFirst {
		return fmt.Errorf("%w: an urgent listing of %d IDs", ErrProtocol, len(f.IDs))
	}
	held := s.IDsOf(f.Tag)
	var lack []crdt.OpID
	for _, b := range f.IDs {
		id := crdt.OpID(b)
		if _, ok := slices.BinarySearchFunc(held, id, crdt.OpID.Compare); !ok && !slices.Contains(lack, id) {
			lack = append(lack, id)
		}
	}
	_, err := s.fetch(c, p, f.Tag, s.wanted(f.Tag, lack), func(crdt.OpID) bool { return true })
	return err
}

// reconcileTag runs one tag as initiator: reconcile, fetch our needs, serve
// theirs. partial: what it fetched was applied in part only.
func (s *Service) reconcileTag(c *conn, p peer.ID, tag []byte, b *budget) (partial bool, err error) {
	defer s.busyTag(p, tag)()
	sess := s.sessionFor(p, tag)
	m, err := sess.Initiate()
	if err != nil {
		return false, err
	}
	for m != nil {
		if err := b.spend(); err != nil {
			return false, err
		}
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
			if err := b.spend(); err != nil {
				return false, err
			}
			if err := c.send(frame{Kind: fRecon, Tag: tag}); err != nil {
				return false, err
			}
		}
	}
	need := s.wanted(tag, sess.Need())
	s.log.Debug("sync: reconciled", "remote", p.String(), "tag", hex.EncodeToString(tag), "need", len(need))
	// Only a fetch of several batches can leave ops unapplied for want of
	// dependencies in a later batch, and a session cut at MaxRounds knows
	// part of the difference: count what it applied then.
	if sess.Cut() {
		s.cuts.Add(1)
		s.log.Debug("sync: reconciliation cut at the round limit", "remote", p.String(), "tag", hex.EncodeToString(tag), "need", len(need))
	}
	counted := len(need) > askBatch || sess.Cut()
	var lacked []crdt.OpID // of need, what is still not held as the fetch starts
	if counted {
		lacked = notHeld(need, s.IDsOf(tag))
	}
	fetched, err := s.fetch(c, p, tag, need, sess.Urgent)
	if err != nil {
		return false, err
	}
	if counted {
		// What this session learnt that was not held as its fetch began
		// and is now: not what gossip or other sessions brought during
		// its rounds. (What they bring during the fetch itself still
		// counts.)
		got := len(lacked) - len(notHeld(lacked, s.IDsOf(tag)))
		// Another round at once for the rest, if this one made progress
		// (a peer that makes every session run to the cut without giving
		// us anything gets no more rounds than a failed session would).
		partial = got > 0 && ((fetched > askBatch && got < fetched) || sess.Cut())
	}
	if len(need) >= maxNeed {
		partial = true // the rest of what we lack: another round at once
	}
	if err := s.serve(c, p, tag, len(sess.items)); err != nil {
		return false, err
	}
	return partial, nil
}

// Claims. A claim on the IDs a session fetches is honoured for claimTTL,
// renewed each time its peer answers a batch with every ID asked for;
// a peer that answers without one loses the session's claims at once. A
// session finding IDs claimed by another waits for that claim to end or
// lapse — within the same round, at most maxClaimWait (well under
// frameTimeout: its peer waits on it meanwhile) — and takes over what is
// neither held nor claimed by then; what a live claim (one making
// progress) still holds it leaves to that session. So one peer delays an
// op by at most claimTTL per honest round, and only by stalling.
const (
	claimTTL     = 5 * time.Second
	maxClaimWait = 5 * time.Second
)

// inflight is the set of op IDs some session of this device is fetching,
// per tag. Both sides of a pair start a session when they meet, and each
// would otherwise fetch — and verify — the same ops: the later claim waits
// for what the earlier one fetches (and skips what is held by then). A
// claim ends with its fetch, applied or not; an op left unapplied is
// fetched again by a later round.
type inflight struct {
	mu      sync.Mutex
	ids     map[string]map[crdt.OpID]*claimSet
	changed chan struct{} // closed, and replaced, whenever claims end
}

// claimSet is one fetch's claims (its fields guarded by inflight.mu).
type claimSet struct {
	tag     string
	ids     []crdt.OpID // claimed (some may have been taken over since)
	expires time.Time
	gone    bool
}

// open starts an empty claim set for a fetch of tag.
func (f *inflight) open(tag []byte, now time.Time) *claimSet {
	return &claimSet{tag: string(tag), expires: now.Add(claimTTL)}
}

// take claims for c the IDs of need not among held that no live claim
// holds (taking over lapsed ones), in need's order; busy are the IDs left
// to live claims, wake the soonest of their lapses, and changed is closed
// when any claim ends.
func (f *inflight) take(c *claimSet, need, held []crdt.OpID, now time.Time) (mine, busy []crdt.OpID, wake time.Time, changed <-chan struct{}) {
	// held comes sorted from the DAG (carried IDs may follow): searched,
	// not copied into a map — a fetch of a few ops from a conversation of
	// thousands cost a map of thousands.
	if !slices.IsSortedFunc(held, crdt.OpID.Compare) {
		held = slices.Clone(held)
		slices.SortFunc(held, crdt.OpID.Compare)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ids == nil {
		f.ids = map[string]map[crdt.OpID]*claimSet{}
	}
	if f.changed == nil {
		f.changed = make(chan struct{})
	}
	claims := f.ids[c.tag]
	if claims == nil {
		claims = map[crdt.OpID]*claimSet{}
		f.ids[c.tag] = claims
	}
	for _, id := range need {
		if _, ok := slices.BinarySearchFunc(held, id, crdt.OpID.Compare); ok {
			continue
		}
		if o := claims[id]; o != nil && o != c && o.expires.After(now) {
			busy = append(busy, id)
			if wake.IsZero() || o.expires.Before(wake) {
				wake = o.expires
			}
			continue
		}
		if claims[id] != c && !c.gone {
			claims[id] = c
			c.ids = append(c.ids, id)
		}
		mine = append(mine, id)
	}
	return mine, busy, wake, f.changed
}

// renew extends c's claims: its peer made progress.
func (f *inflight) renew(c *claimSet, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !c.gone {
		c.expires = now.Add(claimTTL)
	}
}

// release ends c's claims (those not taken over); safe to call twice.
func (f *inflight) release(c *claimSet) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.gone {
		return
	}
	c.gone = true
	if cur := f.ids[c.tag]; cur != nil {
		for _, id := range c.ids {
			if cur[id] == c {
				delete(cur, id)
			}
		}
		if len(cur) == 0 {
			delete(f.ids, c.tag)
		}
	}
	c.ids = nil
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

// claim takes the IDs of need that no session is fetching and that are
// not among held, and counts those it left to another session; release
// gives them back.
func (f *inflight) claim(tag []byte, need, held []crdt.OpID) (mine []crdt.OpID, others int, release func()) {
	now := time.Now()
	c := f.open(tag, now)
	mine, busy, _, _ := f.take(c, need, held, now)
	return mine, len(busy), func() { f.release(c) }
}

// claimNeed claims need for a fetch of tag from p, waiting (at most
// maxClaimWait) on what other sessions claimed; what live claims still
// hold then is left to them, and p synced again next round (that session
// may fail). It does not wait when what it could claim holds an op listed
// urgent (urgent, nil: none), nor in an urgent session (now): that is
// fetched now, and the rest left to the sessions moving it.
func (s *Service) claimNeed(p peer.ID, tag []byte, need []crdt.OpID, urgent func(crdt.OpID) bool, now bool) (*claimSet, []crdt.OpID) {
	start := time.Now()
	c := s.fetches.open(tag, start)
	mine, busy, wake, changed := s.fetches.take(c, need, s.IDsOf(tag), start)
	if len(busy) == 0 {
		return c, mine
	}
	deadline := start.Add(maxClaimWait)
	if now || urgent != nil && slices.ContainsFunc(mine, urgent) {
		deadline = start
	}
	for len(busy) > 0 && s.ctx.Err() == nil {
		t0 := time.Now()
		if !t0.Before(deadline) {
			break
		}
		t := time.NewTimer(min(wake.Sub(t0), deadline.Sub(t0)))
		select {
		case <-changed:
		case <-t.C:
		case <-s.ctx.Done():
		}
		t.Stop()
		var more []crdt.OpID
		more, busy, wake, changed = s.fetches.take(c, busy, s.IDsOf(tag), time.Now())
		// What the other session fetched and this anchor dropped for
		// room is neither held nor to be fetched again (refused.go).
		busy = s.wanted(tag, busy)
		mine = append(mine, s.wanted(tag, more)...)
	}
	if len(busy) > 0 {
		s.mu.Lock()
		if s.deferred == nil {
			s.deferred = map[peer.ID]bool{}
		}
		s.deferred[p] = true
		delete(s.synced, p)
		s.mu.Unlock()
	}
	if len(mine) > 0 {
		// In need's order (dependencies first).
		got := make(map[crdt.OpID]struct{}, len(mine))
		for _, id := range mine {
			got[id] = struct{}{}
		}
		mine = mine[:0]
		for _, id := range need {
			if _, ok := got[id]; ok {
				mine = append(mine, id)
				delete(got, id)
			}
		}
	}
	return c, mine
}

// fetch asks for needed envelopes in batches and applies them, keeping
// two requests in flight so the peer prepares the next batch while this
// side verifies the last, and applying one batch (in its own goroutine,
// in order) while it reads and verifies the next. It waits for what
// another session is fetching (see claimNeed), skips what this device
// holds by now, and reports how many it asked for. An answer with an
// envelope not asked for in that batch ends the session. urgent (nil:
// none) says which IDs were listed urgent: those need starts with go in a
// first batch of their own. In an urgent session (c.urgent: the ops an
// urgent listing named, takeListed) it fetches at most urgentFirst of
// them — even those another session claimed — and then, in one more batch
// of at most siteBatch, their direct dependencies not held (the message
// an urgent reply answers: without it no device can show the reply). The
// rest crosses in the routine rounds beside it (a conversation's urgent
// op may follow its whole backlog, learnt one generation per round trip:
// that is a routine round's work, in batches).
func (s *Service) fetch(c *conn, p peer.ID, tag []byte, need []crdt.OpID, urgent func(crdt.OpID) bool) (int, error) {
	if len(need) > 0 && s.carriesOnly(tag) {
		need = nil // a carrier takes only what is handed to it (carry.go)
	}
	if c.urgent {
		u := 0
		for u < len(need) && u < urgentFirst && urgent != nil && urgent(need[u]) {
			u++
		}
		need = need[:u:u]
	}
	var claims *claimSet
	if len(need) > 0 {
		all := need
		claims, need = s.claimNeed(p, tag, need, urgent, c.urgent)
		defer s.fetches.release(claims)
		if c.urgent {
			// Urgent ops listed (at most urgentFirst) are fetched even if
			// another session claimed them: a peer that listed one first
			// and stalls would otherwise turn it routine (red team 16).
			need = s.wanted(tag, all)
		}
	}
	asked := len(need)
	batch := askBatch
	if s.sitePeer(p) {
		batch = siteBatch
	}
	// Batches are cut as they are asked for: the missing ancestors of an
	// urgent op that came (its deps, theirs in turn) go to the front of
	// what is left (ancestors), so it is applied before unrelated
	// routine ops come.
	rest := need
	var batches [][]crdt.OpID
	want := func() error {
		n := min(len(rest), batch)
		if len(batches) == 0 && urgent != nil {
			// The urgent ops Need put first go in a batch of their own:
			// their answer is paced urgent to a site peer only without
			// routine envelopes in it (urgentIn).
			u := 0
			for u < n && urgent(rest[u]) {
				u++
			}
			if u > 0 {
				n = u
			}
		}
		b := rest[:n:n]
		rest = rest[n:]
		batches = append(batches, b)
		f := frame{Kind: fWant, Tag: tag}
		for _, id := range b {
			f.IDs = append(f.IDs, slices.Clone(id[:]))
		}
		return c.send(f)
	}
	const inFlight = 2
	for len(batches) < inFlight && len(rest) > 0 {
		if err := want(); err != nil {
			return 0, err
		}
	}
	var anc ancestors
	// Batches checked wait here to be applied, while the next are fetched
	// and checked; the applier takes whatever has queued at once, so
	// small batches keep both ends busy early and, when applying is the
	// slower side, are stored together (one store commit, not one each).
	checked := make(chan []Checked, applyQueue)
	applied := make(chan struct{})
	go func() { // ends when checked is closed, before fetch returns
		defer close(applied)
		site := s.sitePeer(p)
		first := true
		for ok := range checked {
			if !first { // the first batch holds the urgent ops: applied alone
				ok = drainChecked(checked, ok)
			}
			first = false
			s.deliver(tag, ok, p)
			if site && len(ok) > 0 {
				s.fromSite(tag, ok)
			}
		}
	}()
	defer func() {
		close(checked)
		<-applied
	}()
	member := s.holds(tag)
	for i := 0; i < len(batches); i++ {
		got, err := c.recv()
		if err != nil || got.Kind != fEnvs {
			return 0, fmt.Errorf("%w: expected envelopes", ErrProtocol)
		}
		if len(rest) > 0 {
			if err := want(); err != nil {
				return 0, err
			}
		}
		ok, complete, err := s.checkAnswer(got.Envs, batches[i], tag, member, p)
		if err != nil {
			return 0, err
		}
		rest = anc.promote(ok, rest, s.urgentAllowed)
		if complete {
			s.fetches.renew(claims, time.Now())
		} else {
			s.fetches.release(claims)
		}
		checked <- ok
		if c.urgent && i == 0 {
			held := s.IDsOf(tag)
			up := s.wanted(tag, directDeps(ok, func(id crdt.OpID) bool {
				_, ok := slices.BinarySearchFunc(held, id, crdt.OpID.Compare)
				return !ok
			}))
			up = up[:min(len(up), siteBatch)]
			if len(up) > 0 {
				up, _, _, _ = s.fetches.take(claims, up, held, time.Now())
			}
			if len(up) > 0 {
				asked += len(up)
				rest = append(rest, up...)
				if err := want(); err != nil {
					return 0, err
				}
			}
		}
	}
	return asked, c.send(frame{Kind: fWant, Tag: tag}) // no more wants
}

// directDeps is the dependencies of got not among got that keep holds.
func directDeps(got []Checked, keep func(crdt.OpID) bool) []crdt.OpID {
	in := make(map[crdt.OpID]bool, len(got))
	for _, ce := range got {
		in[crdt.OpID(e2e.ID(ce.Raw))] = true
	}
	var out []crdt.OpID
	for _, ce := range got {
		for _, d := range ce.Env.Deps {
			id, err := crdt.OpIDFromBytes(d)
			if err != nil || in[id] || !keep(id) {
				continue
			}
			in[id] = true
			out = append(out, id)
		}
	}
	return out
}

// checkAnswer checks the envelopes p answered a want of asked (IDs of tag)
// with and returns those that pass, in the order they came; complete
// reports that every ID asked for came. An envelope not asked for counts
// against p (Penalise) and ends the session. One of another tag — but a
// welcome in the inbox of one of its holders — is refused, and so (on a
// device not holding tag, carrying it: a fresh push into its store) is
// one of a revoked sender, as gossip refuses it; a member takes those, as
// ops others may depend on (see checkSender).
func (s *Service) checkAnswer(envs [][]byte, asked []crdt.OpID, tag []byte, member bool, p peer.ID) (ok []Checked, complete bool, err error) {
	want := make(map[crdt.OpID]bool, len(asked))
	for _, id := range asked {
		want[id] = false
	}
	var pending []*e2e.Envelope
	var raws [][]byte
	for _, raw := range envs {
		id := crdt.OpID(e2e.ID(raw))
		came, wanted := want[id]
		if !wanted {
			s.cfg.Node.Penalise(p)
			return nil, false, fmt.Errorf("%w: an envelope not asked for", ErrProtocol)
		}
		if came {
			continue // twice in one answer
		}
		want[id] = true
		if s.known(tag, id) {
			s.dropped(id, p)
			continue // applied meanwhile (gossip, another session): checked then
		}
		e, err := e2e.Decode(raw)
		if err == nil && !bytes.Equal(e.Tag, tag) && !inboxOf(e, tag) {
			err = errMisfiled
		}
		if err == nil {
			err = s.checkSender(e, member)
		}
		if err != nil {
			s.log.Debug("fetched envelope refused", "from", p.String(), "err", err)
			continue
		}
		pending, raws = append(pending, e), append(raws, raw)
	}
	complete = true
	for _, came := range want {
		complete = complete && came
	}
	ok = make([]Checked, 0, len(pending))
	for i, err := range e2e.VerifyBatch(pending) {
		if err != nil {
			s.cfg.Node.Penalise(p) // forged, as gossip validation counts it
			s.log.Debug("fetched envelope refused", "from", p.String(), "err", err)
			continue
		}
		ok = append(ok, Checked{pending[i], raws[i]})
	}
	return ok, complete, nil
}

// inboxOf reports whether e is a welcome that tag, the inbox of one of
// its holders, carries.
func inboxOf(e *e2e.Envelope, tag []byte) bool {
	if e.Kind != e2e.KindWelcome {
		return false
	}
	w, err := e2e.DecodeWelcome(e.Body)
	if err != nil {
		return false
	}
	for _, m := range w.Holders() {
		if bytes.Equal(inboxTag(m), tag) {
			return true
		}
	}
	return false
}

// serve answers wants until the other side says it wants nothing more; it
// may want at most the held IDs we reconciled the tag with.
func (s *Service) serve(c *conn, p peer.ID, tag []byte, held int) error {
	wanted := 0
	for {
		f, err := c.recv()
		if err != nil || f.Kind != fWant || !bytes.Equal(f.Tag, tag) {
			return fmt.Errorf("%w: expected want", ErrProtocol)
		}
		if len(f.IDs) == 0 {
			return nil
		}
		if wanted += len(f.IDs); wanted > held {
			return fmt.Errorf("%w: %d IDs wanted of a tag we hold %d of", ErrBudget, wanted, held)
		}
		if err := c.send(frame{Kind: fEnvs, Tag: tag, Envs: s.envelopesFor(p, tag, f.IDs)}); err != nil {
			return err
		}
	}
}

// apply checks fetched envelopes and delivers those that pass.
func (s *Service) apply(tag []byte, envs [][]byte, from peer.ID) {
	s.deliver(tag, s.checkFetched(envs, from), from)
}

// checkFetched checks fetched envelopes — the senders, then every signature in
// one batch (signatures dominate the receive path) — and returns those
// that pass, in the order they came (causal where the peer knew it: the
// DAG buffers the rest until their dependencies arrive), to deliver.
func (s *Service) checkFetched(envs [][]byte, from peer.ID) []Checked {
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
	return ok
}

// handleSync is the responder side.
func (s *Service) handleSync(st network.Stream) {
	p := st.Conn().RemotePeer()
	if !s.admitSession(p) {
		st.Reset() // before reading anything
		return
	}
	c := s.newConn(st)
	defer func() { s.endSession(p, c.kind) }()
	defer st.Close()
	defer streams.Bound(s.ctx, st, s.cfg.SessionTimeout)()
	if err := s.respond(p, c); err != nil {
		if s.ctx.Err() == nil {
			s.log.Info("sync: peer cut off", "remote", p.String(), "err", err)
		}
		st.Reset()
	} else if !c.urgent { // an urgent session is no complete sync
		s.mu.Lock()
		s.noteTurn(p)
		s.mu.Unlock()
		if s.sitePeer(p) {
			s.cfg.Links.SiteSynced(p)
		}
	}
}

// maxInbound bounds the sync sessions one peer runs with us at a time.
// An honest peer runs one (its rounds with us never overlap, see
// syncRound); a second covers a stream whose predecessor we have not seen
// end yet. Each session may hold up to maxNeed needed IDs, with their
// claims (≈250 B each, ≈16 MiB at most), for up to syncTimeout: with our
// own round to the peer, one peer pins at most about 50 MiB of our heap
// at a time — within the node's own per-peer memory limit.
// A site peer may open urgentInbound more, which read no more than their
// first offer frame unless it opens an urgent session (classify): at most
// maxInbound routine sessions and urgentInbound urgent ones at once.
const maxInbound = 2

// Session kinds, known once the first offer frame is read (classify).
const (
	kindPending = iota
	kindRoutine
	kindUrgent
)

// admitSession counts an inbound session of p, unless p runs maxInbound
// already (a site peer: maxInbound+urgentInbound); endSession ends one.
func (s *Service) admitSession(p peer.ID) bool {
	limit := maxInbound
	if s.sitePeer(p) {
		limit += urgentInbound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inbound[p] >= limit {
		s.log.Debug("sync: too many sessions of one peer", "remote", p.String())
		return false
	}
	if s.inbound == nil {
		s.inbound = map[peer.ID]int{}
	}
	s.inbound[p]++
	return true
}

// classify counts p's inbound session as routine or urgent, once its
// offer says which, unless p runs as many of that kind already.
func (s *Service) classify(p peer.ID, c *conn, urgent bool) error {
	kind, limit := kindRoutine, maxInbound
	if urgent {
		kind, limit = kindUrgent, urgentInbound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kinds == nil {
		s.kinds = map[peer.ID]*[3]int{}
	}
	k := s.kinds[p]
	if k == nil {
		k = &[3]int{}
		s.kinds[p] = k
	}
	if k[kind] >= limit {
		return fmt.Errorf("%w: more than %d sessions of one kind at once", ErrBudget, limit)
	}
	k[kind]++
	c.kind = kind
	return nil
}

// endSession ends an inbound session of p, of kind (kindPending: never
// classified).
func (s *Service) endSession(p peer.ID, kind int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inbound[p]--; s.inbound[p] <= 0 {
		delete(s.inbound, p)
	}
	if k := s.kinds[p]; k != nil && kind != kindPending {
		if k[kind]--; k[kindRoutine] <= 0 && k[kindUrgent] <= 0 {
			delete(s.kinds, p)
		}
	}
}

// tagSession is the responder's state of the tag being reconciled.
type tagSession struct {
	tag     []byte
	sess    *Session
	serving bool // the peer has sent a want: no more recon
	wanted  int  // IDs the peer wanted
}

// respond runs the responder side of one session until done; an error
// means the peer broke the protocol or its budget (or the stream failed).
func (s *Service) respond(p peer.ID, c *conn) error {
	theirs, err := c.recvOfferThen(func(urgent bool) error { return s.classify(p, c, urgent) })
	if err != nil {
		return err
	}
	if theirs.urgent && !s.sitePeer(p) {
		return fmt.Errorf("%w: an urgent session from a peer that is no site peer", ErrProtocol)
	}
	theirs = s.offerFrom(p, theirs)
	s.accept(theirs.tags, p)
	var keep func([]byte) bool
	if theirs.urgent { // an urgent session: answer for its tags only
		listed := make(map[string]bool, len(theirs.tags))
		for _, t := range theirs.tags {
			listed[string(t)] = true
		}
		keep = func(t []byte) bool { return listed[string(t)] }
		c.urgent = true
	}
	mine := s.offerFor(p, keep)
	if err := c.sendOffer(mine); err != nil {
		return err
	}
	common := map[string]bool{}
	for _, t := range differing(mine, theirs) {
		common[string(t)] = true
	}
	b := newBudget(len(common))
	var cur *tagSession
	handed := false
	release := func() {}
	defer func() { release() }()
	for {
		f, err := c.recv()
		if err != nil {
			return err
		}
		if f.Kind == fDone {
			return nil
		}
		if f.Kind == fHand && s.federated(p) {
			return errHandFederated
		}
		if c.urgent { // listings only (listUrgent), each of a tag both offered, once
			if f.Kind != fRecon || !common[string(f.Tag)] {
				return fmt.Errorf("%w: frame kind %d in an urgent session", ErrProtocol, f.Kind)
			}
			delete(common, string(f.Tag))
			if err := s.takeListed(c, p, f); err != nil {
				return err
			}
			continue
		}
		if f.Kind == fHand && cur == nil && !handed {
			// The initiator's tags are done: it hands us what to carry,
			// then we hand it; only fDone may follow.
			handed = true
			if err := s.takeFrom(c, p, &f); err != nil {
				return err
			}
			if err := s.handTo(c, p, theirs); err != nil {
				return err
			}
			continue
		}
		if handed || (f.Kind != fRecon && f.Kind != fWant) {
			return fmt.Errorf("%w: frame kind %d mid-session", ErrProtocol, f.Kind)
		}
		if cur == nil || !bytes.Equal(cur.tag, f.Tag) {
			// A new tag: one we both offered, not reconciled yet in this
			// session, opened by a recon frame.
			if cur != nil {
				return fmt.Errorf("%w: next tag before the last was done", ErrProtocol)
			}
			if !common[string(f.Tag)] || f.Kind != fRecon {
				return fmt.Errorf("%w: a tag not shared, equal on both sides, or reconciled already", ErrProtocol)
			}
			delete(common, string(f.Tag))
			cur = &tagSession{tag: f.Tag, sess: s.sessionFor(p, f.Tag)}
			release = s.busyTag(p, f.Tag)
		}
		switch f.Kind {
		case fRecon:
			if cur.serving {
				return fmt.Errorf("%w: recon after want", ErrProtocol)
			}
			if err := b.spend(); err != nil {
				return err
			}
			if len(f.Msg) == 0 {
				continue
			}
			out, err := cur.sess.Reply(f.Msg)
			if err != nil {
				return err
			}
			if err := c.send(frame{Kind: fRecon, Tag: f.Tag, Msg: out}); err != nil {
				return err
			}
		case fWant:
			cur.serving = true
			if len(f.IDs) > 0 {
				if cur.wanted += len(f.IDs); cur.wanted > len(cur.sess.items) {
					return fmt.Errorf("%w: %d IDs wanted of a tag we hold %d of", ErrBudget, cur.wanted, len(cur.sess.items))
				}
				if err := c.send(frame{Kind: fEnvs, Tag: f.Tag, Envs: s.envelopesFor(p, f.Tag, f.IDs)}); err != nil {
					return err
				}
				continue
			}
			// Their wants are served; now ours, and the tag is done.
			if _, err := s.fetch(c, p, f.Tag, s.wanted(f.Tag, cur.sess.Need()), cur.sess.Urgent); err != nil {
				return err
			}
			release()
			release = func() {}
			cur = nil
		}
	}
}

// gate serves only admitted peers, waiting for a decision in progress.
func (s *Service) gate(h network.StreamHandler) network.StreamHandler {
	return func(st network.Stream) {
		// The handler is one of the service's goroutines: Close waits for
		// it, so it never writes to a store closed under it.
		if !s.enter() {
			st.Reset()
			return
		}
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, 7*time.Second)
		defer cancel()
		if !s.cfg.Node.AwaitAdmitted(ctx, st.Conn().RemotePeer()) {
			st.Reset()
			return
		}
		h(st)
	}
}
