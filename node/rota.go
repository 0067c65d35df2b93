package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/internal/streams"
	"github.com/medmesh/medmesh/rota"
)

// The on-call rota (package rota) spreads like directory entries: a new op
// is published at once on RotaTopic, and right after the directory sync
// with a newly admitted peer the two exchange the op IDs they hold on
// ProtoRota and fetch what they lack (as they do, too, with every admitted
// neighbour after this device signs an op), so a device that was away catches up
// when it meets anyone of the site. Only ops of this device's site are
// taken in, only from admitted peers (the topic's validator and the gated
// stream handler refuse anyone else), and only ops whose signer the
// directory knows as a colleague of the site with a certificate that
// could allow them. The rota is persisted, as one value, in the encrypted
// store and loaded at start, after the directory.
const (
	ProtoRota = "/medmesh/rota/1"
	RotaTopic = "/medmesh/rota/1"
)

const (
	maxRotaOps   = rota.MaxRoles*(rota.MaxDefs+rota.MaxLive) + rota.MaxPending
	maxRotaOffer = maxRotaOps*36 + 16
	maxRotaMsg   = maxRotaOps*(rota.MaxOpSize+4) + 16
)

var rotaKey = ds.NewKey("/rota/state")

// Rota write limits. Each signer (peer ID) may add at most rotaBurst new
// ops to this device's rota at once, and one more per rotaInterval after
// that, whichever way they come (the topic, ProtoRota, this device's own
// local API); the excess is refused with ErrRotaRate and, not being taken
// in, neither forwarded nor offered to anyone. rotaBurst is what one
// signer can hold in a rota at once — a definition and a live holder op
// per role, and its share of pending ops — so a device catching up from
// scratch never hits it; a colleague flooding the rota (every take of
// its own supersedes the one before, pushing the role's remembered
// compacted IDs out) is held to one op per rotaInterval. An old op its
// signer's compacted mark already supersedes (a replay) is charged to the
// peer that delivered it, not its signer, and not forwarded.
const (
	rotaBurst      = 2*rota.MaxRoles + rota.MaxPendingPerSigner
	rotaInterval   = 5 * time.Second
	maxRotaSigners = 4096 // buckets kept; full ones are forgotten first
)

// ErrRotaRate: a colleague made more rota changes than this device takes
// in per window; try again later.
var ErrRotaRate = errors.New("too many rota changes by one colleague: try again later")

// rotaLimiter is a token bucket per signer, owned by rotaState.mu.
type rotaLimiter struct {
	buckets map[peer.ID]*rotaBucket
}

type rotaBucket struct {
	tokens float64
	at     time.Time
}

func (l *rotaLimiter) bucket(id peer.ID, now time.Time) *rotaBucket {
	if l.buckets == nil {
		l.buckets = map[peer.ID]*rotaBucket{}
	}
	b := l.buckets[id]
	if b == nil {
		if len(l.buckets) >= maxRotaSigners {
			l.forgetFull(now)
		}
		b = &rotaBucket{tokens: rotaBurst, at: now}
		l.buckets[id] = b
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(rotaBurst, b.tokens+float64(d)/float64(rotaInterval))
		b.at = now
	}
	return b
}

// allow reports whether signer id may add one more op now.
func (l *rotaLimiter) allow(id peer.ID, now time.Time) bool { return l.bucket(id, now).tokens >= 1 }

// spend charges signer id for one op added.
func (l *rotaLimiter) spend(id peer.ID, now time.Time) { l.bucket(id, now).tokens-- }

// forgetFull drops the buckets that have refilled (a new bucket starts
// full, so forgetting them changes nothing), then, should that not make
// room, any.
func (l *rotaLimiter) forgetFull(now time.Time) {
	for id, b := range l.buckets {
		if b.tokens+float64(now.Sub(b.at))/float64(rotaInterval) >= rotaBurst {
			delete(l.buckets, id)
		}
	}
	for id := range l.buckets {
		if len(l.buckets) < maxRotaSigners {
			break
		}
		delete(l.buckets, id)
	}
}

// rotaOffer is the initiator's first frame on ProtoRota (the IDs of the
// ops it holds) and the responder's answer (the IDs it lacks).
type rotaOffer struct {
	IDs [][]byte `cbor:"1,keyasint"`
}

// rotaOps is the initiator's second frame: the ops asked for.
type rotaOps struct {
	Ops [][]byte `cbor:"1,keyasint"`
}

// rotaState is the node's rota: one owner, mu, held across the store
// write that persists a change (a few kilobytes).
type rotaState struct {
	mu    sync.Mutex
	r     *rota.Rota
	lim   rotaLimiter
	topic *pubsub.Topic
}

// authority is the node's rota.Authority: this device and the colleagues
// the directory offers now (not revoked) whose certificate has not
// expired. It remembers answers for the length of one rota call.
type authority struct {
	n    *Node
	memo map[peer.ID]*rota.Member
}

func (n *Node) authority() *authority { return &authority{n: n, memo: map[peer.ID]*rota.Member{}} }

func (a *authority) Member(id peer.ID) (rota.Member, bool) {
	if m, ok := a.memo[id]; ok {
		if m == nil {
			return rota.Member{}, false
		}
		return *m, true
	}
	var m *rota.Member
	s, ok := a.n.self, id == a.n.ID()
	if !ok {
		s, ok = a.n.dir.lookup(id.String())
		ok = ok && s.PeerID == id
	}
	if ok && a.n.cfg.Now().Before(s.NotAfter) {
		m = &rota.Member{Name: s.Name, StaffID: s.StaffID, Site: s.Site, Roles: slices.Clone(s.Roles)}
	}
	a.memo[id] = m
	if m == nil {
		return rota.Member{}, false
	}
	return *m, true
}

// loadRota reads the persisted rota (after the directory, whose
// certificates judge it).
func (n *Node) loadRota(ctx context.Context) error {
	n.rt = &rotaState{r: rota.New(n.self.Site)}
	data, err := n.cfg.Store.Get(ctx, rotaKey)
	if errors.Is(err, ds.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load rota: %w", err)
	}
	r, err := rota.Load(data, n.authority())
	if err != nil {
		return fmt.Errorf("load rota: %w", err)
	}
	if r.Site() == n.self.Site {
		n.rt.r = r
	}
	return nil
}

// startRota joins the rota topic and serves ProtoRota.
func (n *Node) startRota() error {
	n.host.SetStreamHandler(ProtoRota, n.owned(n.gate(n.handleRota)))
	if err := n.ps.RegisterTopicValidator(RotaTopic, n.scored(n.validateRota)); err != nil {
		return err
	}
	t, err := n.ps.Join(RotaTopic)
	if err != nil {
		return err
	}
	sub, err := t.Subscribe()
	if err != nil {
		return err
	}
	n.rt.topic = t
	n.goOwned(func() {
		defer t.Close()
		defer sub.Cancel()
		for {
			if _, err := sub.Next(n.ctx); err != nil {
				return
			}
		}
	})
	return nil
}

// addRota takes in ops (decoded) and persists the rota if it changed. It
// returns the ops that were new and the error of the first refused one
// (ErrRotaRate for a signer over its rate).
func (n *Node) addRota(ops []*rota.Op) (added []*rota.Op, err error) { return n.addRotaFrom("", ops) }

// addRotaFrom is addRota for ops that peer from delivered ("": this
// device's own). An op its signer's compacted mark already supersedes (an
// old op replayed once the role's gone list forgot it) is charged to from,
// not to its signer — a replay must not drain a colleague's rate
// (redteam10) — and is not returned, so not forwarded: it changes no
// holder.
func (n *Node) addRotaFrom(from peer.ID, ops []*rota.Op) (added []*rota.Op, err error) {
	n.rt.mu.Lock()
	auth := n.authority()
	now := n.cfg.Now()
	changed := false
	for _, o := range ops {
		payer, stale := o.Signer, n.rt.r.Stale(o)
		if stale {
			payer = from
		}
		if payer != "" && !n.rt.r.Has(o.ID) && !n.rt.lim.allow(payer, now) {
			if err == nil {
				err = fmt.Errorf("%w: %s", ErrRotaRate, payer)
			}
			continue
		}
		ok, e := n.rt.r.Add(o, auth)
		if e != nil && err == nil {
			err = e
		}
		if ok {
			changed = true
			if payer != "" {
				n.rt.lim.spend(payer, now)
			}
			if !stale {
				added = append(added, o)
			}
		}
	}
	if changed {
		data, e := n.rt.r.Marshal()
		if e == nil {
			e = n.cfg.Store.Put(n.ctx, rotaKey, data)
		}
		if e != nil {
			n.log.Error("persist rota", "err", e)
		}
	}
	n.rt.mu.Unlock()
	return added, err
}

// Roles is the rota as this device knows it now.
func (n *Node) Roles() []rota.Role {
	n.rt.mu.Lock()
	defer n.rt.mu.Unlock()
	return n.rt.r.View(n.authority())
}

// RotaDraft is an op this device is asked to sign, as the local API gives
// it: a definition (Kind define: Role, Name, Requires, Chain), a take, a
// hand-over (To) or a release.
type RotaDraft struct {
	Kind     rota.Kind
	Role     rota.RoleID
	Name     string
	Requires string
	Chain    []rota.RoleID
	To       peer.ID
}

// SubmitRota signs d as this device — superseding what it knows of the
// role now (the holders, or the definition) — takes it in and spreads it.
// Errors wrap rota.ErrNotAllowed when this device's certificate (or the
// hand-over target's) does not allow it, rota.ErrUnknownRole for a take,
// hand-over or release of a role not defined, rota.ErrMalformed for bad
// fields, rota.ErrFull beyond the rota's bounds, ErrRotaRate when this
// device signed more rota ops than the rate allows.
func (n *Node) SubmitRota(d RotaDraft) (*rota.Op, error) {
	draft := rota.Draft{Kind: d.Kind, Role: d.Role, Site: n.self.Site, Time: n.cfg.Now(),
		Name: d.Name, Requires: d.Requires, Chain: d.Chain, To: d.To}
	n.rt.mu.Lock()
	cur, known := n.rt.r.Role(d.Role, n.authority())
	n.rt.mu.Unlock()
	switch {
	case d.Kind == rota.KindDefine:
		draft.Seq = 1
		if known {
			draft.Seq = cur.Seq + 1
		}
	case !known:
		return nil, fmt.Errorf("%w: %s", rota.ErrUnknownRole, d.Role)
	default:
		draft.Seen = cur.Live
	}
	op, err := rota.Sign(n.cfg.Key.Identity, draft)
	if err != nil {
		return nil, err
	}
	added, err := n.addRota([]*rota.Op{op})
	if err != nil {
		return nil, err
	}
	if len(added) > 0 {
		n.publishRota(op)
		// And straight to every admitted neighbour: gossip drops what is
		// published while a new peer's streams come up.
		for _, id := range n.adm.admittedPeers("") {
			n.goOwned(func() { n.sendRota(id) })
		}
	}
	return op, nil
}

func (n *Node) publishRota(op *rota.Op) {
	n.goOwned(func() {
		if err := n.rt.topic.Publish(n.ctx, op.Raw()); err != nil && n.ctx.Err() == nil {
			n.log.Debug("publish rota op", "err", err)
		}
	})
}

// validateRota judges a rota op on the topic; it is taken in here, once.
func (n *Node) validateRota(_ context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	if from == n.ID() {
		return pubsub.ValidationAccept
	}
	if !n.isAdmitted(from) {
		return pubsub.ValidationReject
	}
	op, err := rota.Decode(m.Data)
	if err != nil {
		return pubsub.ValidationReject
	}
	if op.Site != n.self.Site {
		return pubsub.ValidationIgnore // another site's rota: not ours to carry
	}
	added, err := n.addRotaFrom(from, []*rota.Op{op})
	switch {
	case len(added) > 0:
		return pubsub.ValidationAccept
	case errors.Is(err, rota.ErrNotAllowed) && op.Signer != from:
		return pubsub.ValidationIgnore // perhaps a directory entry we lack, or a CRL the forwarder lacks
	case errors.Is(err, ErrRotaRate):
		return pubsub.ValidationIgnore // not taken in, so not forwarded; the forwarder may be honest
	case err != nil && !errors.Is(err, rota.ErrFull):
		return pubsub.ValidationReject
	}
	return pubsub.ValidationIgnore
}

// sendRota is the initiator's side of ProtoRota with an admitted peer:
// offer the IDs of the ops held, send the ones it asks for.
func (n *Node) sendRota(id peer.ID) {
	n.rt.mu.Lock()
	ops := n.rt.r.Ops()
	n.rt.mu.Unlock()
	byID := map[rota.OpID]*rota.Op{}
	offer := rotaOffer{IDs: [][]byte{}}
	for _, o := range ops {
		byID[o.ID] = o
		offer.IDs = append(offer.IDs, o.ID[:])
	}
	ctx, cancel := context.WithTimeout(n.ctx, dirTimeout)
	defer cancel()
	s, err := n.host.NewStream(ctx, id, ProtoRota)
	if err != nil {
		return
	}
	defer streams.Bound(ctx, s, dirTimeout)()
	r := msgio.NewVarintReaderSize(s, maxRotaMsg)
	var want rotaOffer
	if err := writeFrame(s, offer); err != nil {
		s.Reset()
		return
	}
	if err := readFrame(r, &want, maxRotaOffer); err != nil || len(want.IDs) > len(offer.IDs) {
		s.Reset()
		return
	}
	out := rotaOps{Ops: [][]byte{}}
	for _, w := range want.IDs {
		if o := byID[rota.OpID(w)]; len(w) == len(rota.OpID{}) && o != nil {
			out.Ops = append(out.Ops, o.Raw())
		}
	}
	if err := writeFrame(s, out); err != nil {
		s.Reset()
		return
	}
	s.CloseWrite()
	io.Copy(io.Discard, io.LimitReader(s, 1)) //nolint:errcheck // the peer closes once it has taken them in
	s.Close()
}

// handleRota is the responder's side of ProtoRota with an admitted peer.
func (n *Node) handleRota(s network.Stream) {
	defer s.Close()
	from := s.Conn().RemotePeer()
	defer streams.Bound(n.ctx, s, dirTimeout)()
	r := msgio.NewVarintReaderSize(s, maxRotaMsg)
	var offer rotaOffer
	if err := readFrame(r, &offer, maxRotaOffer); err != nil || len(offer.IDs) > maxRotaOps {
		n.log.Debug("bad rota offer", "remote", from.String())
		s.Reset()
		return
	}
	want := rotaOffer{IDs: [][]byte{}}
	n.rt.mu.Lock()
	for _, id := range offer.IDs {
		if len(id) == len(rota.OpID{}) && !n.rt.r.Has(rota.OpID(id)) {
			want.IDs = append(want.IDs, id)
		}
	}
	n.rt.mu.Unlock()
	if err := writeFrame(s, want); err != nil {
		s.Reset()
		return
	}
	var got rotaOps
	if err := readFrame(r, &got, maxRotaMsg); err != nil || len(got.Ops) > len(want.IDs) {
		n.log.Debug("bad rota ops", "remote", from.String())
		s.Reset()
		return
	}
	ops := make([]*rota.Op, 0, len(got.Ops))
	for _, raw := range got.Ops {
		op, err := rota.Decode(raw)
		if err != nil {
			n.Penalise(from)
			s.Reset()
			return
		}
		if op.Site == n.self.Site {
			ops = append(ops, op)
		}
	}
	// Definitions first, so takes find their role.
	slices.SortStableFunc(ops, func(a, b *rota.Op) int {
		return boolInt(b.Kind == rota.KindDefine) - boolInt(a.Kind == rota.KindDefine)
	})
	n.addRotaFrom(from, ops) //nolint:errcheck // refused ops are dropped one by one
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
