package rota

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// Member is what an Authority vouches for: a colleague's current
// certificate.
type Member struct {
	Name    string
	StaffID string
	Site    string
	Roles   []string
}

// HasRole reports whether the certificate carries role.
func (m Member) HasRole(role string) bool { return slices.Contains(m.Roles, role) }

// Authority is what the caller knows of certificates now (the node's
// directory): Member is false for a colleague unknown, revoked or expired.
type Authority interface {
	Member(id peer.ID) (Member, bool)
}

// Rota is one site's on-call rota. It is not safe for concurrent use: its
// owner serialises calls.
type Rota struct {
	site    string
	roles   map[RoleID]*roleState
	pending map[OpID]*Op // holder ops whose role has no definition yet
}

type roleState struct {
	defs []*Op // greatest (Seq, ID) first, at most MaxDefs
	ops  map[OpID]*Op
	// gone are compacted ops (true) and ops a compacted op superseded
	// that never arrived (false): the latter are still taken in when they
	// arrive, to learn what they supersede, and dropped at once.
	gone      map[OpID]bool
	goneOrder []OpID
	// namedBy charges each never-arrived ID in gone to the signer whose
	// compacted op alone named it ("" once two signers named it, or after
	// a restart): one signer naming made-up IDs pushes out only its own
	// (MaxNamedPerSigner), never what others' ops superseded (redteam10).
	namedBy map[OpID]peer.ID
	// last is, per signer, the latest (Time, ID) of its valid ops
	// compacted away: an earlier op of that signer arriving later is
	// superseded by it.
	last map[peer.ID]mark
	// follows are the Seen of compacted ops (at most maxFollows each):
	// the chain from an op naming one to a signer's mark outlives the
	// compacted ops between (redteam10).
	follows map[OpID][]OpID
}

// maxFollows bounds the Seen one compacted op keeps.
const maxFollows = 8

type mark struct {
	Time time.Time
	ID   OpID
}

func (m mark) after(o *Op) bool { return !opLess(&Op{Time: m.Time, ID: m.ID}, o) }

// New is an empty rota of site.
func New(site string) *Rota {
	return &Rota{site: site, roles: map[RoleID]*roleState{}, pending: map[OpID]*Op{}}
}

// Site is the rota's site.
func (r *Rota) Site() string { return r.site }

// Has reports whether r holds op id (or held and compacted it).
func (r *Rota) Has(id OpID) bool {
	if _, ok := r.pending[id]; ok {
		return true
	}
	for _, rs := range r.roles {
		if rs.has(id) {
			return true
		}
	}
	return false
}

func (rs *roleState) has(id OpID) bool {
	if _, ok := rs.ops[id]; ok {
		return true
	}
	if rs.gone[id] {
		return true
	}
	return slices.ContainsFunc(rs.defs, func(o *Op) bool { return o.ID == id })
}

// Ops are the ops r holds, definitions first, for sync and storage.
func (r *Rota) Ops() []*Op {
	var out []*Op
	for _, id := range r.roleIDs() {
		out = append(out, r.roles[id].defs...)
	}
	for _, id := range r.roleIDs() {
		for _, o := range r.roles[id].ops {
			out = append(out, o)
		}
	}
	for _, o := range r.pending {
		out = append(out, o)
	}
	return out
}

func (r *Rota) roleIDs() []RoleID {
	ids := make([]RoleID, 0, len(r.roles))
	for id := range r.roles {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func defLess(a, b *Op) int { // greatest (Seq, ID) first
	if c := cmp.Compare(b.Seq, a.Seq); c != 0 {
		return c
	}
	return bytes.Compare(b.ID[:], a.ID[:])
}

// Add takes in op. It reports whether r changed. Ops of another site, of a
// signer auth does not vouch for or whose certificate could not allow
// them, and ops beyond the bounds are refused with an error; an op already
// held (or compacted) is not an error. Superseded ops are compacted.
func (r *Rota) Add(op *Op, auth Authority) (bool, error) {
	if op.Site != r.site {
		return false, ErrSite
	}
	if r.Has(op.ID) {
		return false, nil
	}
	m, ok := auth.Member(op.Signer)
	if !ok || m.Site != r.site {
		return false, fmt.Errorf("%w: signer not a colleague of the site", ErrNotAllowed)
	}
	if op.Kind == KindDefine {
		if !m.HasRole(AdminRole) {
			return false, fmt.Errorf("%w: defining needs %s", ErrNotAllowed, AdminRole)
		}
		rs := r.roles[op.Role]
		if rs == nil {
			if len(r.roles) >= MaxRoles && !r.evictUndefined(auth) {
				return false, fmt.Errorf("%w: %d roles", ErrFull, MaxRoles)
			}
			rs = &roleState{ops: map[OpID]*Op{}, gone: map[OpID]bool{}, last: map[peer.ID]mark{}}
			r.roles[op.Role] = rs
		}
		if !rs.keepDef(op) {
			return false, nil // the signer's own greater definition stands
		}
		r.release(op.Role, rs, auth)
		r.compact(op.Role, rs, auth)
		return true, nil
	}
	rs := r.roles[op.Role]
	if rs == nil || r.definition(rs, auth) == nil {
		// No definition stands to judge it by (none arrived yet, or its
		// definers were revoked): it waits in the signer's share of the
		// pending queue, and is judged when one stands (redteam10) —
		// refused at once if no definition held could ever allow it.
		if rs != nil && !slices.ContainsFunc(rs.defs, func(d *Op) bool { return allowed(op, d, auth) }) {
			return false, fmt.Errorf("%w: %s of %s under no definition held", ErrNotAllowed, op.Kind, op.Role)
		}
		return r.hold(op)
	}
	r.release(op.Role, rs, auth) // a definition stands again (a certificate renewed)
	if err := r.addHolderOp(rs, op, auth); err != nil {
		return false, err
	}
	r.compact(op.Role, rs, auth)
	return true, nil
}

// hold puts a holder op in the pending queue, within the bounds.
func (r *Rota) hold(op *Op) (bool, error) {
	if len(r.pending) >= MaxPending {
		return false, fmt.Errorf("%w: %d ops wait for their role", ErrFull, MaxPending)
	}
	if r.pendingOf(op.Signer) >= MaxPendingPerSigner {
		return false, fmt.Errorf("%w: %d ops of one signer wait for their role", ErrFull, MaxPendingPerSigner)
	}
	r.pending[op.ID] = op
	return true, nil
}

// release judges the pending ops of role once a definition of it stands:
// the ones it allows join the role, the others are dropped.
func (r *Rota) release(id RoleID, rs *roleState, auth Authority) {
	if r.definition(rs, auth) == nil {
		return
	}
	var ready []*Op
	for oid, p := range r.pending {
		if p.Role == id {
			delete(r.pending, oid)
			ready = append(ready, p)
		}
	}
	slices.SortFunc(ready, func(a, b *Op) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	for _, p := range ready {
		r.addHolderOp(rs, p, auth) //nolint:errcheck // refused ones are dropped
	}
}

// keepDef takes in a definition: each signer keeps only its greatest
// (Seq, ID) — only that one can ever win — so one admin, however many
// definitions it signs, holds one of the MaxDefs places and cannot push
// another admin's out. Beyond MaxDefs signers the least goes. It reports
// whether op was kept.
func (rs *roleState) keepDef(op *Op) bool {
	if i := slices.IndexFunc(rs.defs, func(d *Op) bool { return d.Signer == op.Signer }); i >= 0 {
		if defLess(rs.defs[i], op) < 0 {
			return false
		}
		rs.defs = slices.Delete(rs.defs, i, i+1)
	}
	rs.defs = append(rs.defs, op)
	slices.SortFunc(rs.defs, defLess)
	if len(rs.defs) > MaxDefs {
		rs.defs = rs.defs[:MaxDefs]
	}
	return slices.Contains(rs.defs, op)
}

// evictUndefined makes room for a new role when MaxRoles are held: the
// role with the lowest ID among those no definition auth vouches for now
// (all its definers revoked, expired or stripped of AdminRole) is dropped
// with its ops. It reports whether one was.
func (r *Rota) evictUndefined(auth Authority) bool {
	for _, id := range r.roleIDs() {
		if r.definition(r.roles[id], auth) == nil {
			delete(r.roles, id)
			return true
		}
	}
	return false
}

// pendingOf counts the pending ops of signer.
func (r *Rota) pendingOf(signer peer.ID) int {
	n := 0
	for _, p := range r.pending {
		if p.Signer == signer {
			n++
		}
	}
	return n
}

func (r *Rota) addHolderOp(rs *roleState, op *Op, auth Authority) error {
	if rs.has(op.ID) {
		return nil
	}
	if def := r.definition(rs, auth); def == nil || !allowed(op, def, auth) {
		return fmt.Errorf("%w: %s of %s", ErrNotAllowed, op.Kind, op.Role)
	}
	if len(rs.ops) >= MaxLive {
		return fmt.Errorf("%w: %d open ops on %s", ErrFull, MaxLive, op.Role)
	}
	rs.ops[op.ID] = op
	return nil
}

// definition is the winning definition auth vouches for, or nil.
func (r *Rota) definition(rs *roleState, auth Authority) *Op {
	for _, d := range rs.defs {
		if m, ok := auth.Member(d.Signer); ok && m.Site == r.site && m.HasRole(AdminRole) {
			return d
		}
	}
	return nil
}

// allowed judges a take, hand-over or release against the role's
// definition and the certificates auth vouches for.
func allowed(op, def *Op, auth Authority) bool {
	m, ok := auth.Member(op.Signer)
	if !ok || m.Site != def.Site {
		return false
	}
	switch op.Kind {
	case KindTake:
		return m.HasRole(def.Requires)
	case KindHandover:
		if !m.HasRole(def.Requires) && !m.HasRole(AdminRole) {
			return false
		}
		t, ok := auth.Member(op.To)
		return ok && t.Site == def.Site && t.HasRole(def.Requires)
	case KindRelease:
		return m.HasRole(def.Requires) || m.HasRole(AdminRole)
	}
	return false
}

// live is the valid ops of a role no valid op supersedes. A signer's
// valid ops supersede one another by (effective time, ID): one device's
// ops are sequential, so a signer who fails to name its own earlier ops
// cannot fill the role with concurrent ones. An op's effective time is its
// own Time, pulled down to just before the Time of any valid op naming it
// in Seen (whoever named it had seen it, so it existed by then): a take
// stamped a day ahead by a clock running fast does not outrank the
// hand-over its signer makes, naming it, once the clock is put right.
//
// A signer's compacted mark is pulled down the same way, as the op it
// stands for would be, when a valid op names that op, and compaction
// keeps it pulled down: a take stamped before the signer's mark (a clock
// set back) that names what superseded the marked op follows it, so it
// is not superseded by the mark after superseding the holders — which
// would leave the role with nobody on call (redteam10).
func (r *Rota) live(rs *roleState, def *Op, auth Authority) (live []*Op, superseded map[OpID]bool, eff map[OpID]time.Time) {
	superseded = map[OpID]bool{}
	eff = map[OpID]time.Time{}
	var valid []*Op
	for _, o := range rs.ops {
		eff[o.ID] = o.Time
		if _, ok := rs.gone[o.ID]; ok {
			superseded[o.ID] = true
		}
		if allowed(o, def, auth) {
			valid = append(valid, o)
		}
	}
	for _, m := range rs.last {
		if _, held := eff[m.ID]; !held {
			eff[m.ID] = m.Time
		}
	}
	// Pull down to a fixed point (chains of naming ops); at most MaxLive
	// rounds, since each round settles one more link of a chain.
	// A compacted op named (or a mark) pulls down the marks it followed.
	bound := map[OpID]time.Time{} // compacted ops pulled down, for what they followed
	for changed := true; changed; {
		changed = false
		var pull func(s OpID, below time.Time)
		pull = func(s OpID, below time.Time) {
			if t, held := eff[s]; held && !t.Before(below) {
				eff[s] = below.Add(-time.Millisecond)
				changed = true
			}
			if fs := rs.follows[s]; len(fs) > 0 {
				if t, ok := bound[s]; !ok || !t.Before(below) {
					bound[s] = below.Add(-time.Millisecond)
					for _, f := range fs {
						pull(f, bound[s])
					}
				}
			}
		}
		for _, o := range valid {
			for _, s := range o.Seen {
				pull(s, eff[o.ID])
			}
		}
		for _, m := range rs.last {
			for _, f := range rs.follows[m.ID] {
				pull(f, eff[m.ID])
			}
		}
	}
	less := func(a, b *Op) bool { return opLess(&Op{Time: eff[a.ID], ID: a.ID}, &Op{Time: eff[b.ID], ID: b.ID}) }
	latest := map[peer.ID]*Op{}
	for _, o := range valid {
		if l := latest[o.Signer]; l == nil || less(l, o) {
			latest[o.Signer] = o
		}
	}
	for _, o := range valid {
		for _, s := range o.Seen {
			superseded[s] = true
		}
		m, ok := rs.last[o.Signer]
		if latest[o.Signer] != o || ok && (mark{Time: eff[m.ID], ID: m.ID}).after(o) {
			superseded[o.ID] = true
		}
	}
	for _, o := range valid {
		if !superseded[o.ID] {
			live = append(live, o)
		}
	}
	slices.SortFunc(live, func(a, b *Op) int {
		if opLess(a, b) {
			return -1
		}
		if opLess(b, a) {
			return 1
		}
		return 0
	})
	return live, superseded, eff
}

func opLess(a, b *Op) bool { // by (Time, ID)
	if !a.Time.Equal(b.Time) {
		return a.Time.Before(b.Time)
	}
	return bytes.Compare(a.ID[:], b.ID[:]) < 0
}

// compact drops a role's ops that valid ops supersede, remembering their
// IDs (at most MaxGone, oldest forgotten first).
func (r *Rota) compact(id RoleID, rs *roleState, auth Authority) {
	def := r.definition(rs, auth)
	if def == nil {
		return
	}
	_, superseded, eff := r.live(rs, def, auth)
	for p, m := range rs.last { // keep a mark pulled down once what named it goes
		if t := eff[m.ID]; t.Before(m.Time) {
			rs.last[p] = mark{Time: t, ID: m.ID}
		}
	}
	wait := rs.waiting(superseded, eff, def, auth)
	dropped := map[OpID]*Op{}
	for oid := range superseded {
		o, ok := rs.ops[oid]
		if !ok || wait[oid] {
			continue
		}
		if allowed(o, def, auth) {
			dropped[oid] = o
		}
		delete(rs.ops, oid)
		rs.forget(oid)
		// What a dropped valid op superseded stays superseded: an op it
		// names that arrives later is not taken in.
		if allowed(o, def, auth) {
			e := &Op{Time: eff[oid], ID: oid} // a mark at the effective time
			if m, ok := rs.last[o.Signer]; !ok || !m.after(e) {
				rs.last[o.Signer] = mark{Time: e.Time, ID: oid}
			}
			for _, s := range o.Seen {
				if _, held := rs.ops[s]; !held {
					rs.name(s, o.Signer)
				}
			}
		}
	}
	rs.follow(dropped)
	for len(rs.goneOrder) > MaxGone {
		delete(rs.gone, rs.goneOrder[0])
		delete(rs.namedBy, rs.goneOrder[0])
		delete(rs.follows, rs.goneOrder[0])
		rs.goneOrder = rs.goneOrder[1:]
	}
}

// waiting are the superseded ops kept for now: a valid op superseded
// only by its own signer's ops or mark (nothing names it) whose Seen
// names an op this replica has neither held nor compacted may yet follow
// that mark once the chain arrives (a take stamped back by a clock set
// back), so it is not dropped until the chain is complete — at most one
// per signer, its greatest by (effective time, ID), so a signer cannot
// fill MaxLive with them.
func (rs *roleState) waiting(superseded map[OpID]bool, eff map[OpID]time.Time, def *Op, auth Authority) map[OpID]bool {
	named := map[OpID]bool{}
	for _, o := range rs.ops {
		if allowed(o, def, auth) {
			for _, s := range o.Seen {
				named[s] = true
			}
		}
	}
	best := map[peer.ID]*Op{}
	for oid := range superseded {
		o, ok := rs.ops[oid]
		if !ok || named[oid] || !allowed(o, def, auth) {
			continue
		}
		if _, g := rs.gone[oid]; g {
			continue
		}
		if !rs.incomplete(oid, map[OpID]bool{}) {
			continue
		}
		e := &Op{Time: eff[oid], ID: oid}
		if b := best[o.Signer]; b == nil || opLess(b, e) {
			best[o.Signer] = e
		}
	}
	wait := map[OpID]bool{}
	for _, b := range best {
		wait[b.ID] = true
	}
	return wait
}

// incomplete reports whether op id's Seen chain (through held ops and
// what compacted ops followed) reaches an op this replica never held.
func (rs *roleState) incomplete(id OpID, visited map[OpID]bool) bool {
	if visited[id] {
		return false
	}
	visited[id] = true
	if o, held := rs.ops[id]; held {
		return slices.ContainsFunc(o.Seen, func(s OpID) bool { return rs.incomplete(s, visited) })
	}
	done, g := rs.gone[id]
	if !g || !done {
		return true
	}
	return slices.ContainsFunc(rs.follows[id], func(f OpID) bool { return rs.incomplete(f, visited) })
}

// follow keeps the Seen of each valid op just compacted (at most
// maxFollows, least IDs first): an op naming it later still follows, by
// effective time, the ops and marks it named once they are gone.
func (rs *roleState) follow(dropped map[OpID]*Op) {
	for id, o := range dropped {
		if len(o.Seen) == 0 {
			continue
		}
		r := slices.Clone(o.Seen)
		slices.SortFunc(r, func(a, b OpID) int { return bytes.Compare(a[:], b[:]) })
		r = slices.Compact(r)
		if len(r) > maxFollows {
			r = r[:maxFollows]
		}
		if rs.follows == nil {
			rs.follows = map[OpID][]OpID{}
		}
		rs.follows[id] = r
	}
}

func (rs *roleState) forget(id OpID) {
	if _, ok := rs.gone[id]; !ok {
		rs.goneOrder = append(rs.goneOrder, id)
	}
	rs.gone[id] = true
	delete(rs.namedBy, id)
}

// name records id as superseded by a compacted op of by, before id
// arrived, within by's share: beyond MaxNamedPerSigner IDs charged to by,
// by's oldest is forgotten.
func (rs *roleState) name(id OpID, by peer.ID) {
	if done, ok := rs.gone[id]; ok {
		if p, charged := rs.namedBy[id]; !done && charged && p != by {
			rs.namedBy[id] = "" // named by two signers: neither can push it out
		}
		return
	}
	if rs.namedBy == nil {
		rs.namedBy = map[OpID]peer.ID{}
	}
	n := 0
	for _, p := range rs.namedBy {
		if p == by {
			n++
		}
	}
	if n >= MaxNamedPerSigner {
		i := slices.IndexFunc(rs.goneOrder, func(x OpID) bool { p, ok := rs.namedBy[x]; return ok && p == by })
		old := rs.goneOrder[i]
		rs.goneOrder = slices.Delete(rs.goneOrder, i, i+1)
		delete(rs.gone, old)
		delete(rs.namedBy, old)
		delete(rs.follows, old)
	}
	rs.gone[id] = false
	rs.namedBy[id] = by
	rs.goneOrder = append(rs.goneOrder, id)
}

// Stale reports whether op is a take, hand-over or release its own
// signer's compacted mark already supersedes here (an old op replayed
// once the gone list forgot it): taken in, it is compacted at once and
// changes no holder, so a caller need not charge its signer for it. An op
// stamped before the mark whose Seen chain reaches the mark (or an op a
// compacted op named that has not arrived, which may) follows it, so it
// is not stale (redteam10).
func (r *Rota) Stale(op *Op) bool {
	rs := r.roles[op.Role]
	if op.Kind == KindDefine || rs == nil {
		return false
	}
	m, ok := rs.last[op.Signer]
	if !ok || !m.after(op) {
		return false
	}
	visited := map[OpID]bool{}
	return !slices.ContainsFunc(op.Seen, func(s OpID) bool { return rs.mayReach(s, m.ID, visited) })
}

// mayReach reports whether id's Seen chain (through held ops and the Seen
// compacted ops keep) reaches target, or an op a compacted op named that
// has not arrived, through which it may.
func (rs *roleState) mayReach(id, target OpID, visited map[OpID]bool) bool {
	if id == target {
		return true
	}
	if visited[id] {
		return false
	}
	visited[id] = true
	if o, held := rs.ops[id]; held {
		return slices.ContainsFunc(o.Seen, func(s OpID) bool { return rs.mayReach(s, target, visited) })
	}
	done, g := rs.gone[id]
	if !g {
		return false // unknown here, or forgotten: a replay is charged to whoever delivers it
	}
	if !done {
		return true // named by a compacted op, not arrived: it may lead to target
	}
	return slices.ContainsFunc(rs.follows[id], func(s OpID) bool { return rs.mayReach(s, target, visited) })
}

// Compact drops superseded ops of every role (after the Authority's view
// changed, say).
// Ops waiting for a definition are judged once one stands again (an
// admin's certificate renewed, say).
func (r *Rota) Compact(auth Authority) {
	for id, rs := range r.roles {
		r.release(id, rs, auth)
		r.compact(id, rs, auth)
	}
}

// Holder is one current holder of an on-call role.
type Holder struct {
	PeerID  peer.ID
	Name    string
	StaffID string
	Since   time.Time // the signer's clock when the holder took or was handed the role
	Op      OpID
}

// Role is an on-call role as the rota shows it now.
type Role struct {
	ID       RoleID
	Name     string
	Site     string
	Requires string
	Chain    []RoleID
	Holders  []Holder
	// Split: more than one op holds the role unsuperseded (a partition);
	// the holders of each are listed.
	Split bool
	// Live are the ops a take, hand-over or release must name to
	// supersede the current holders (at most MaxSeen).
	Live []OpID
	// Seq is the standing definition's sequence; an update must use
	// Seq+1 (definitions of signers no longer vouched for do not count).
	Seq uint64
}

// View is every defined role auth lets stand, sorted by ID.
func (r *Rota) View(auth Authority) []Role {
	var out []Role
	for _, id := range r.roleIDs() {
		if v, ok := r.role(id, auth); ok {
			out = append(out, v)
		}
	}
	return out
}

// Role is one role's view; false if no definition auth lets stand.
func (r *Rota) Role(id RoleID, auth Authority) (Role, bool) { return r.role(id, auth) }

func (r *Rota) role(id RoleID, auth Authority) (Role, bool) {
	rs := r.roles[id]
	if rs == nil {
		return Role{}, false
	}
	def := r.definition(rs, auth)
	if def == nil {
		return Role{}, false
	}
	v := Role{ID: id, Name: def.Name, Site: def.Site, Requires: def.Requires, Chain: slices.Clone(def.Chain),
		Holders: []Holder{}, Seq: def.Seq}
	live, _, _ := r.live(rs, def, auth)
	seen := map[peer.ID]bool{}
	for _, o := range live {
		if len(v.Live) < MaxSeen {
			v.Live = append(v.Live, o.ID)
		}
		h := o.Holder()
		if h == "" || seen[h] {
			continue
		}
		m, ok := auth.Member(h)
		if !ok || !m.HasRole(def.Requires) {
			continue // a revoked or expired holder is not returned
		}
		seen[h] = true
		v.Holders = append(v.Holders, Holder{PeerID: h, Name: m.Name, StaffID: m.StaffID, Since: o.Time, Op: o.ID})
	}
	v.Split = len(live) > 1
	return v, true
}

// Next is the role escalation from id reaches at step (1: the first role
// in id's chain), with its holders as view shows them. It is false when id
// is not in view, its chain is shorter than step, or that role is not in
// view. Urgent escalation asks it for "the holders of the next role in
// R's chain".
func Next(view []Role, id RoleID, step int) (Role, bool) {
	from, ok := Find(view, id)
	if !ok || step < 1 || step > len(from.Chain) {
		return Role{}, false
	}
	return Find(view, from.Chain[step-1])
}

// Find is role id in view.
func Find(view []Role, id RoleID) (Role, bool) {
	for _, v := range view {
		if v.ID == id {
			return v, true
		}
	}
	return Role{}, false
}

// stored is a rota as persisted.
type stored struct {
	V    uint8      `cbor:"1,keyasint"`
	Site string     `cbor:"2,keyasint"`
	Ops  [][]byte   `cbor:"3,keyasint"`
	Gone []goneList `cbor:"4,keyasint"`
}

type goneList struct {
	Role  string     `cbor:"1,keyasint"`
	IDs   [][]byte   `cbor:"2,keyasint"` // oldest first
	Named []bool     `cbor:"3,keyasint"` // per ID: superseded before it arrived
	Last  []lastMark `cbor:"4,keyasint"`
	// Follows: per compacted op, the marks it followed (absent in rotas
	// stored before it existed).
	Follows []followList `cbor:"5,keyasint,omitempty"`
}

type followList struct {
	ID    []byte   `cbor:"1,keyasint"`
	Marks [][]byte `cbor:"2,keyasint"`
}

type lastMark struct {
	Signer []byte `cbor:"1,keyasint"`
	Time   int64  `cbor:"2,keyasint"`
	ID     []byte `cbor:"3,keyasint"`
}

// maxStored bounds a persisted rota.
const maxStored = (MaxRoles*(MaxDefs+MaxLive)+MaxPending)*(MaxOpSize+4) + MaxRoles*(MaxGone*35*(2+maxFollows)+80) + 1024

// Marshal encodes r for the store.
func (r *Rota) Marshal() ([]byte, error) {
	s := stored{V: version, Site: r.site, Ops: [][]byte{}, Gone: []goneList{}}
	for _, o := range r.Ops() {
		s.Ops = append(s.Ops, o.raw)
	}
	for _, id := range r.roleIDs() {
		rs := r.roles[id]
		if len(rs.goneOrder) == 0 && len(rs.last) == 0 {
			continue
		}
		g := goneList{Role: string(id), IDs: [][]byte{}, Named: []bool{}, Last: []lastMark{}}
		for _, oid := range rs.goneOrder {
			g.IDs = append(g.IDs, oid[:])
			g.Named = append(g.Named, !rs.gone[oid])
		}
		signers := make([]peer.ID, 0, len(rs.last))
		for p := range rs.last {
			signers = append(signers, p)
		}
		slices.Sort(signers)
		for _, p := range signers {
			m := rs.last[p]
			g.Last = append(g.Last, lastMark{Signer: []byte(p), Time: m.Time.UnixMilli(), ID: m.ID[:]})
		}
		for _, oid := range rs.goneOrder {
			if fs := rs.follows[oid]; len(fs) > 0 {
				f := followList{ID: oid[:], Marks: [][]byte{}}
				for _, m := range fs {
					f.Marks = append(f.Marks, m[:])
				}
				g.Follows = append(g.Follows, f)
			}
		}
		s.Gone = append(s.Gone, g)
	}
	return detcbor.Marshal(s)
}

// Load decodes a rota Marshal wrote, judging its ops again with auth (ops
// auth no longer allows are dropped).
func Load(data []byte, auth Authority) (*Rota, error) {
	var s stored
	if err := detcbor.Unmarshal(data, &s, maxStored); err != nil {
		return nil, fmt.Errorf("%w: stored rota: %v", ErrMalformed, err)
	}
	if s.V != version || len(s.Gone) > MaxRoles {
		return nil, fmt.Errorf("%w: stored rota", ErrMalformed)
	}
	r := New(s.Site)
	ops := make([]*Op, 0, len(s.Ops))
	for _, raw := range s.Ops {
		o, err := Decode(raw)
		if err != nil {
			return nil, err
		}
		ops = append(ops, o)
	}
	// Definitions first, so holder ops find their role; the gone lists
	// once the roles exist.
	slices.SortStableFunc(ops, func(a, b *Op) int { return cmp.Compare(defFirst(a), defFirst(b)) })
	for _, o := range ops {
		if o.Kind != KindDefine {
			break
		}
		r.Add(o, auth) //nolint:errcheck // refused: dropped
	}
	for _, g := range s.Gone {
		rs := r.roles[RoleID(g.Role)]
		if rs == nil || len(g.IDs) > MaxGone || len(g.Named) != len(g.IDs) || len(g.Last) > MaxGone {
			continue
		}
		for i, b := range g.IDs {
			if len(b) != len(OpID{}) {
				return nil, fmt.Errorf("%w: stored rota", ErrMalformed)
			}
			oid := OpID(b)
			if _, dup := rs.gone[oid]; !dup {
				rs.gone[oid] = !g.Named[i]
				rs.goneOrder = append(rs.goneOrder, oid)
			}
		}
		for _, l := range g.Last {
			p, err := peer.IDFromBytes(l.Signer)
			if err != nil || len(l.ID) != len(OpID{}) {
				return nil, fmt.Errorf("%w: stored rota", ErrMalformed)
			}
			rs.last[p] = mark{Time: time.UnixMilli(l.Time).UTC(), ID: OpID(l.ID)}
		}
		if len(g.Follows) > MaxGone {
			return nil, fmt.Errorf("%w: stored rota", ErrMalformed)
		}
		for _, f := range g.Follows {
			if len(f.ID) != len(OpID{}) || len(f.Marks) > maxFollows || !rs.gone[OpID(f.ID)] {
				return nil, fmt.Errorf("%w: stored rota", ErrMalformed)
			}
			var ms []OpID
			for _, m := range f.Marks {
				if len(m) != len(OpID{}) {
					return nil, fmt.Errorf("%w: stored rota", ErrMalformed)
				}
				ms = append(ms, OpID(m))
			}
			if rs.follows == nil {
				rs.follows = map[OpID][]OpID{}
			}
			rs.follows[OpID(f.ID)] = ms
		}
	}
	for _, o := range ops {
		if o.Kind != KindDefine {
			r.Add(o, auth) //nolint:errcheck // refused: dropped
		}
	}
	return r, nil
}

func defFirst(o *Op) int {
	if o.Kind == KindDefine {
		return 0
	}
	return 1
}
