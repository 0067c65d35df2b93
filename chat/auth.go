package chat

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// This file is the conversation's one authorisation rule (chat/doc.go
// states it): a function of the DAG alone, the same on every replica.

// view is the set of membership ops and welcomes in an op's causal past,
// valid or not (validity is looked up when membership is computed). Views
// are immutable and shared between ops while nothing changes.
type view struct {
	set map[crdt.OpID]struct{}
	gen uint64
	m   *membership // cache, for this gen
}

func (v *view) has(id crdt.OpID) bool {
	_, ok := v.set[id]
	return ok
}

// membership is the state a view implies.
type membership struct {
	created   bool
	members   map[peer.ID]bool
	admins    map[peer.ID]bool
	retention crdt.LWW[int64]
	epochs    []crdt.OpID // welcomes that may be in use: see epochsOf
	rank      map[peer.ID]seniority
	opaque    bool // holds a welcome whose control key this device lacks
}

// union is the view of a set of ops: shared when they agree.
func (r *Replica) union(ids []crdt.OpID) *view {
	var out *view
	merged := false
	for _, id := range ids {
		info := r.ops[id]
		if info == nil || info.view == nil {
			continue
		}
		switch {
		case out == nil:
			out = info.view
		case out == info.view:
		default:
			if !merged {
				m := &view{set: make(map[crdt.OpID]struct{}, len(out.set)+len(info.view.set))}
				for k := range out.set {
					m.set[k] = struct{}{}
				}
				out, merged = m, true
			}
			for k := range info.view.set {
				out.set[k] = struct{}{}
			}
		}
	}
	if out == nil {
		return r.empty
	}
	return out
}

// extend sets an op's own view: its past, plus itself if it is a
// membership op or a welcome.
func (r *Replica) extend(id crdt.OpID, info *opInfo) {
	info.view = info.before
	if isMembership(info.kind) || info.kind == kindWelcome {
		v := &view{set: make(map[crdt.OpID]struct{}, len(info.before.set)+1)}
		for k := range info.before.set {
			v.set[k] = struct{}{}
		}
		v.set[id] = struct{}{}
		info.view = v
	}
}

// membersOf computes the membership a view implies from its valid ops.
func (r *Replica) membersOf(v *view) *membership {
	if v.gen == r.gen && v.m != nil {
		return v.m
	}
	adds, removes, grants := map[peer.ID][]crdt.OpID{}, map[peer.ID][]crdt.OpID{}, map[peer.ID][]crdt.OpID{}
	m := &membership{members: map[peer.ID]bool{}, admins: map[peer.ID]bool{}}
	for id := range v.set {
		info := r.ops[id]
		if info.kind == kindWelcome && info.valid && !r.hasControl(info.epoch) && !containsID(info.holders, r.dev.ID) {
			m.opaque = true // a new member, before history reaches it
		}
		if !info.valid {
			continue
		}
		switch info.kind {
		case kindCreate:
			m.created = true
			for _, mb := range info.p.Members {
				adds[peer.ID(mb)] = append(adds[peer.ID(mb)], id)
			}
			adds[info.sender] = append(adds[info.sender], id)
			grants[info.sender] = append(grants[info.sender], id)
		case kindAdd:
			adds[peer.ID(info.p.Member)] = append(adds[peer.ID(info.p.Member)], id)
		case kindRemove:
			removes[peer.ID(info.p.Member)] = append(removes[peer.ID(info.p.Member)], id)
		case kindLeave:
			removes[info.sender] = append(removes[info.sender], id)
		case kindPromote:
			grants[peer.ID(info.p.Member)] = append(grants[peer.ID(info.p.Member)], id)
		case kindEscalate:
			for _, t := range info.p.To {
				adds[peer.ID(t)] = append(adds[peer.ID(t)], id)
			}
		case kindRetention:
			k, _ := r.dag.Key(id)
			m.retention.Set(info.p.Retention, crdt.Stamp{Key: k, ID: id})
		}
	}
	// A member is in if some add of it has every removal of it in its
	// past: concurrent add and remove — remove wins.
	after := func(ops []crdt.OpID, rm []crdt.OpID) bool {
		for _, a := range ops {
			if !slices.ContainsFunc(rm, func(x crdt.OpID) bool { return !r.ops[a].before.has(x) }) {
				return true
			}
		}
		return false
	}
	for p, a := range adds {
		if after(a, removes[p]) {
			m.members[p] = true
		}
	}
	m.rank = map[peer.ID]seniority{}
	for p, g := range grants {
		if m.members[p] && after(g, removes[p]) {
			m.admins[p] = true
			for _, id := range g {
				s := seniority{}
				if gi := r.ops[id]; gi.kind == kindPromote {
					s = seniority{promoted: true, depth: gi.depth, id: id}
				}
				if old, ok := m.rank[p]; !ok || s.compare(old) < 0 {
					m.rank[p] = s
				}
			}
		}
	}
	m.epochs = r.epochsOf(v, m)
	v.gen, v.m = r.gen, m
	return m
}

// epochsOf lists the welcomes of a view that may be in use: valid, held by
// exactly the view's members, with every valid change of who is a member
// in the view in their causal past. Sorted: the preferred last.
func (r *Replica) epochsOf(v *view, m *membership) []crdt.OpID {
	var changes, out []crdt.OpID
	for id := range v.set {
		switch info := r.ops[id]; {
		case !info.valid:
		case info.kind == kindAdd, info.kind == kindRemove, info.kind == kindLeave, info.kind == kindEscalate:
			changes = append(changes, id) // (create names exactly the root welcome's holders)
		}
	}
	for id := range v.set {
		info := r.ops[id]
		if info.kind != kindWelcome || !info.valid || !sameSet(info.holders, m.members) {
			continue
		}
		if slices.ContainsFunc(changes, func(c crdt.OpID) bool { return !info.view.has(c) }) {
			continue
		}
		out = append(out, id)
	}
	slices.SortFunc(out, func(a, b crdt.OpID) int {
		ka, _ := r.dag.Key(a)
		kb, _ := r.dag.Key(b)
		return crdt.Stamp{Key: ka, ID: a}.Compare(crdt.Stamp{Key: kb, ID: b})
	})
	return out
}

// hasControl reports whether this device holds the control key of epoch
// (from opening its welcome, or as history matching its commitment).
func (r *Replica) hasControl(epoch e2e.EpochID) bool {
	_, ok := r.control[epoch]
	return ok
}

func sameSet(a []peer.ID, b map[peer.ID]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !b[x] {
			return false
		}
	}
	return true
}

// admit decides, when an op's dependencies are all present, whether it
// enters the DAG: an op by a device other than the creator that is not a
// member at its causal point (never added, or removed in its past) is
// refused — its body is never stored, its keys never derived — unless an
// op waiting for it needs it for causality, when it is kept as a
// content-less node (bounded per sender and in all). A device that cannot
// yet read the membership its past holds (a new member before its
// history) admits everything.
func (r *Replica) admit(op crdt.Op, wanted bool) crdt.Admission {
	if r.dirty {
		r.refresh()
	}
	if r.conv.IsZero() {
		return crdt.AdmitFull
	}
	sender := peer.ID(op.Author)
	if sender == r.creator {
		return crdt.AdmitFull
	}
	m := r.membersOf(r.union(op.Deps))
	if m.opaque || m.members[sender] {
		return crdt.AdmitFull // a member at its causal point (if void, honest ops may depend on it)
	}
	err := fmt.Errorf("%w: op %s by %s", ErrRefused, op.ID.String()[:12], sender)
	if wanted && r.stubs[sender] < maxStubs && r.nStubs < maxAllStubs {
		r.refused = append(r.refused, err)
		return crdt.AdmitStub
	}
	r.refused = append(r.refused, err)
	delete(r.decoded, op.ID)
	return crdt.Refuse
}

// Bounds on the content-less nodes kept for refused ops: per sender, and
// in all (fresh identities cost nothing to make).
const (
	maxStubs    = 256
	maxAllStubs = 4096
)

// judge authorises a newly applied op (the incremental path: the result
// is what a full refresh computes, since the op's past is fixed and the
// effective removals change only through ops that trigger a refresh).
func (r *Replica) judge(id crdt.OpID, info *opInfo) {
	if r.dirty && !r.restoring { // Restore refreshes once, at the end
		r.refresh()
	}
	r.decryptControl(info)
	if info.env.Kind == e2e.KindContent && r.mayOpen(id, info) {
		r.decryptContent(id, info)
	}
	r.authorise(id, info)
	if info.kind == kindWelcome && r.shouldOpen(info) {
		r.open(info)
	}
	r.extend(id, info)
	r.noteBlind(info)
	if info.kind == kindRemove || info.kind == kindLeave || info.kind == kindPromote {
		r.rebuild, r.dirty = true, true // the effective removals may change, valid or not
	}
	if info.valid && (info.kind == kindText || info.kind == kindPhoto) {
		info.shown = true
	}
	if info.valid && info.kind == kindDelete {
		r.destroy(info.p.Target)
	}
}

// shouldOpen: a welcome is opened only once it is authorised — or, while
// this device cannot read the membership in the welcome's past (it is new
// and holds no control keys of those epochs yet), to learn them; keys of a
// welcome judged unauthorised are then dropped unused.
func (r *Replica) shouldOpen(info *opInfo) bool {
	return info.valid || r.conv.IsZero() || r.membersOf(info.before).opaque
}

// mayOpen: a content op is decrypted — and its sender's chain moved — only
// if its sender may write in its epoch, and it is neither void nor
// equivocal. An op that turns valid later is decrypted then.
func (r *Replica) mayOpen(id crdt.OpID, info *opInfo) bool {
	ok, _ := r.sealed(id, info)
	return ok && !r.voided(id, info) && !r.equivocal[id]
}

// authorise decides an op's validity: the rule for its kind against the
// membership of its causal past, then the effective removals,
// equivocation and the revoked-sender rule.
func (r *Replica) authorise(id crdt.OpID, info *opInfo) {
	ok, reason := r.rule(id, info)
	if ok && info.kind != kindDelete {
		switch {
		case r.voided(id, info):
			ok, reason = false, ErrRemoved
		case r.equivocal[id]:
			ok, reason = false, ErrEquivocation
		case !r.standing(id):
			ok, reason = false, ErrRevokedSender
			r.hidden = true
		}
	}
	info.valid = ok
	if !ok && info.reason == nil && reason != nil {
		info.reason = reason
	}
	if ok {
		info.reason = nil
	}
}

func (r *Replica) rule(id crdt.OpID, info *opInfo) (bool, error) {
	if info.stub || info.gone || info.env == nil {
		return false, nil
	}
	deps := r.dag.Deps(id)
	m := r.membersOf(info.before)
	denied := func(what string) (bool, error) {
		return false, fmt.Errorf("%w: %s by %s", ErrNotAuthorised, what, info.sender)
	}
	if info.kind == kindWelcome {
		if len(deps) == 0 {
			if info.sender != r.creator || !containsID(info.holders, info.sender) || id != r.firstRoot() {
				return denied("root welcome not by the creator, or not its first")
			}
			return true, nil
		}
		if !m.members[info.sender] {
			return denied("welcome by a non-member")
		}
		if !sameSet(info.holders, m.members) {
			return denied("welcome held by others than the members")
		}
		return true, nil
	}
	if info.kind == kindDelete {
		// Sealed under the root epoch, which every member holds or gets
		// as history, and judged by authorship alone: whether a message
		// was deleted never depends on which epochs a device held, nor on
		// later removals — its plaintext is destroyed at once.
		t := r.target(info.p.Target)
		if info.epoch != e2e.EpochID(r.firstRoot()) || t == nil || t.env == nil || t.env.Kind != e2e.KindContent || t.sender != info.sender ||
			(t.kind != kindText && t.kind != kindPhoto) || !r.inPast(crdt.OpID(info.p.Target), id) {
			return denied("delete of another's message, or of one not in its past")
		}
		return true, nil
	}
	if ok, err := r.sealed(id, info); !ok {
		return ok, err
	}
	switch k := info.kind; k {
	case kindCreate: // sealed checked it
	case 0:
		return false, nil // not readable here (yet)
	case kindAdd, kindRemove, kindPromote:
		if !m.admins[info.sender] || len(info.p.Member) == 0 {
			return denied("membership change by a non-admin")
		}
		// An admin removes only admins junior to it: nobody strips the
		// creator or a senior admin, so the group keeps an admin unless
		// the admins leave — except a device the trust has revoked (a
		// stolen creator's phone must not keep the group's keys).
		if t := peer.ID(info.p.Member); k == kindRemove && t != info.sender && m.admins[t] && m.rank[info.sender].compare(m.rank[t]) >= 0 &&
			(r.revoked == nil || !r.revoked(t)) {
			return denied("removal of a more senior admin")
		}
	case kindRetention:
		if !m.admins[info.sender] {
			return denied("retention by a non-admin")
		}
	case kindRole:
		if !m.admins[info.sender] {
			return denied("role link by a non-admin")
		}
	case kindEdit:
		t := r.target(info.p.Target)
		if t == nil || (t.kind != kindText && t.kind != kindPhoto) || t.sender != info.sender || !r.inPast(crdt.OpID(info.p.Target), id) {
			return denied("edit of another's message, or of one not in its past")
		}
	case kindEscalate:
		if ok, err := r.escalationRule(id, info, m); !ok {
			return ok, err
		}
	case kindLeave, kindReceipt, kindText, kindReact, kindUnreact, kindPhoto, kindChunk, kindPatient:
	default:
		return denied(fmt.Sprintf("kind %d", k))
	}
	return true, nil
}

// firstRoot is the conversation's one root welcome: of the welcomes with no
// deps by the creator, the lowest op ID (a creator issuing two cannot make
// replicas disagree on which one founds the conversation).
func (r *Replica) firstRoot() crdt.OpID {
	var best crdt.OpID
	for _, id := range r.roots {
		if info := r.ops[id]; info != nil && info.sender == r.creator && (best.IsZero() || id.Compare(best) < 0) {
			best = id
		}
	}
	return best
}

// sealed checks what a content or control op's header allows judging
// before its body is read: it is sealed in an epoch whose authorised
// welcome is in its past and held by its sender, a member (the creator's
// create op: the root epoch).
func (r *Replica) sealed(id crdt.OpID, info *opInfo) (bool, error) {
	w := r.ops[crdt.OpID(info.epoch)]
	if w == nil || w.kind != kindWelcome || !info.before.has(crdt.OpID(info.epoch)) || !containsID(w.holders, info.sender) || !w.valid {
		return false, fmt.Errorf("%w: op in an epoch its sender does not hold, by %s", ErrNotAuthorised, info.sender)
	}
	m := r.membersOf(info.before)
	if info.kind == kindCreate {
		deps := r.dag.Deps(id)
		named := map[peer.ID]bool{info.sender: true}
		for _, mb := range info.p.Members {
			named[peer.ID(mb)] = true
		}
		return info.sender == r.creator && len(deps) == 1 && deps[0] == crdt.OpID(info.epoch) &&
			len(r.dag.Deps(deps[0])) == 0 && !m.created && sameSet(w.holders, named), nil
	}
	if !m.members[info.sender] {
		return false, fmt.Errorf("%w: op by a non-member %s", ErrNotAuthorised, info.sender)
	}
	return true, nil
}

// removal is a candidate effective removal: by removes target.
type removal struct {
	id         crdt.OpID
	by, target peer.ID
	rank       seniority
}

// seniority orders admins: the creator first, then by the first
// authorised promotion (shallower in the DAG first, then op ID).
type seniority struct {
	promoted bool
	depth    uint32
	id       crdt.OpID
}

func (a seniority) compare(b seniority) int {
	if a.promoted != b.promoted {
		if !a.promoted {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(a.depth, b.depth); c != 0 {
		return c
	}
	return bytes.Compare(a.id[:], b.id[:])
}

// grow adds to the effective removals, after a pass judged every op with
// the current ones: every valid leave, else the valid removal by the most
// senior author (then the shallowest, then by op ID) — so a removal whose
// author's own authority a senior's removal voids never goes first. It
// reports whether it added any; a refresh makes one pass per removal.
func (r *Replica) grow(order []crdt.OpID) bool {
	ranks := map[peer.ID]seniority{}
	var cands []removal
	for _, id := range order {
		info := r.ops[id]
		if info == nil || !info.valid {
			continue
		}
		switch info.kind {
		case kindCreate:
			ranks[info.sender] = seniority{}
		case kindPromote:
			p := peer.ID(info.p.Member)
			s := seniority{promoted: true, depth: info.depth, id: id}
			if old, ok := ranks[p]; !ok || s.compare(old) < 0 {
				ranks[p] = s
			}
		case kindLeave:
			if !r.isEffective[id] {
				cands = append(cands, removal{id: id, by: info.sender, target: info.sender})
			}
		case kindRemove:
			if !r.isEffective[id] {
				cands = append(cands, removal{id: id, by: info.sender, target: peer.ID(info.p.Member)})
			}
		}
	}
	if len(cands) == 0 {
		return false
	}
	var safe []removal
	for _, c := range cands {
		if c.by == c.target {
			safe = append(safe, c) // leaves: nothing to decide
		}
	}
	if len(safe) == 0 {
		for i := range cands {
			if s, ok := ranks[cands[i].by]; ok {
				cands[i].rank = s
			} else {
				cands[i].rank = seniority{promoted: true, depth: ^uint32(0)}
			}
		}
		best := slices.MinFunc(cands, func(a, b removal) int {
			if c := a.rank.compare(b.rank); c != 0 {
				return c
			}
			return bytes.Compare(a.id[:], b.id[:])
		})
		safe = []removal{best}
	}
	for _, c := range safe {
		r.effective[c.target] = append(r.effective[c.target], c.id)
		r.isEffective[c.id] = true
	}
	r.ancestors = nil
	return true
}

// voided reports whether an op's sender was removed by an effective removal
// concurrent with it: then the op is void (an effective removal itself is
// not: it was decided with priority).
func (r *Replica) voided(id crdt.OpID, info *opInfo) bool {
	return !r.isEffective[id] && r.voidedBy(id, info, info.sender)
}

func (r *Replica) voidedBy(id crdt.OpID, info *opInfo, sender peer.ID) bool {
	for _, rm := range r.effective[sender] {
		if rm == id || info.before.has(rm) {
			continue // the removal is in the op's past: judged by membership
		}
		if !r.ancestor(id, rm) {
			return true
		}
	}
	return false
}

// ancestor reports whether id is in the causal past of op rm (an effective
// removal).
func (r *Replica) ancestor(id, rm crdt.OpID) bool {
	if v := r.ops[rm].view; v.has(id) {
		return true
	}
	if r.ancestors == nil {
		r.ancestors = map[crdt.OpID]map[crdt.OpID]struct{}{}
	}
	set := r.ancestors[rm]
	if set == nil {
		set = map[crdt.OpID]struct{}{}
		stack := slices.Clone(r.dag.Deps(rm))
		for len(stack) > 0 {
			cur := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if _, seen := set[cur]; seen {
				continue
			}
			set[cur] = struct{}{}
			stack = append(stack, r.dag.Deps(cur)...)
		}
		r.ancestors[rm] = set
	}
	_, ok := set[id]
	return ok
}

// inPast reports whether op x is in the causal past of op y: a search back
// from y that stops at ops no deeper than x.
func (r *Replica) inPast(x, y crdt.OpID) bool {
	xi := r.ops[x]
	if xi == nil || r.ops[y] == nil {
		return false
	}
	seen := map[crdt.OpID]bool{}
	stack := slices.Clone(r.dag.Deps(y))
	for len(stack) > 0 {
		cur := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if cur == x {
			return true
		}
		ci := r.ops[cur]
		if seen[cur] || ci == nil || ci.depth <= xi.depth {
			continue
		}
		seen[cur] = true
		stack = append(stack, r.dag.Deps(cur)...)
	}
	return false
}

// standing applies the revoked-sender rule: an op of a revoked author stands
// only if an op of an unrevoked author depends on it.
func (r *Replica) standing(id crdt.OpID) bool {
	if r.revoked == nil {
		return true
	}
	info := r.ops[id]
	if !r.revoked(info.sender) {
		return true
	}
	return r.endorsed(id)
}

func (r *Replica) endorsed(id crdt.OpID) bool {
	return Endorsed(id, r.children, r.endorses)
}

// endorses reports whether op c vouches for its past under the
// revoked-sender rule: a whole op by an unrevoked author. Stubs — the
// content-less nodes kept for a refused non-member's op that another op
// waited for — do not count: other replicas may not hold them, and
// admission keeps whole ops only of members at their causal point. (It
// cannot ask for the author's membership itself: membership is computed
// with this rule, and a new member's replica would find the founding ops
// of a revoked creator endorsed by nobody.)
func (r *Replica) endorses(c crdt.OpID) bool {
	info := r.ops[c]
	return info != nil && !info.stub && !r.dag.Stub(c) && !r.revoked(info.sender)
}

// Endorsed is the revoked-sender rule on a DAG given by each op's
// children (its direct dependants): an op of a revoked author stands only
// if an op that endorses its past (an unrevoked member's) depends on it,
// directly or through other ops. Replicas apply it to their DAG;
// simulations apply the same function to theirs.
func Endorsed[ID comparable](id ID, children func(ID) []ID, endorses func(ID) bool) bool {
	seen := map[ID]bool{}
	stack := []ID{id}
	for len(stack) > 0 {
		cur := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, c := range children(cur) {
			if seen[c] {
				continue
			}
			seen[c] = true
			if endorses(c) {
				return true
			}
			stack = append(stack, c)
		}
	}
	return false
}

func (r *Replica) children(id crdt.OpID) []crdt.OpID {
	if r.kids == nil {
		r.kids = map[crdt.OpID][]crdt.OpID{}
		for oid := range r.ops {
			for _, d := range r.dag.Deps(oid) {
				r.kids[d] = append(r.kids[d], oid)
			}
		}
	}
	return r.kids[id]
}

// refresh recomputes every op's authorisation when keys, removals,
// equivocation or revocations changed: passes over the DAG in causal order
// that grow the effective removals to a fixed point (see grow), then the
// welcomes that turned valid are opened — and if that gave this device
// keys that open more, again.
func (r *Replica) refresh() {
	for i := 0; r.rebuild && i <= len(r.ops); i++ {
		r.rebuild, r.dirty, r.hidden = false, false, false
		r.kids, r.heads, r.cache, r.ancestors = nil, nil, nil, nil
		r.effective, r.isEffective = map[peer.ID][]crdt.OpID{}, map[crdt.OpID]bool{}
		order := r.dag.Order()
		r.blind = false
		r.pass(order)
		for r.grow(order) {
			r.pass(order)
		}
		for _, id := range order {
			info := r.ops[id]
			if info == nil {
				continue
			}
			if info.kind == kindWelcome {
				if r.shouldOpen(info) {
					r.open(info) // may set rebuild: another round
				} else if info.opened && info.sender != r.dev.ID && r.send[info.epoch] != nil {
					r.unopen(info) // opened to learn history, then judged unauthorised
				}
			}
			if info.valid && (info.kind == kindText || info.kind == kindPhoto) {
				info.shown = true
			}
			if info.valid && info.kind == kindDelete {
				r.destroy(info.p.Target)
			}
		}
	}
}

// pass judges every op in causal order with the current effective
// removals, decrypting what it may.
func (r *Replica) pass(order []crdt.OpID) {
	r.gen++
	for _, id := range order {
		info := r.ops[id]
		if info == nil {
			continue
		}
		info.before = r.union(r.dag.Deps(id))
		info.reason = nil
		unread := info.kind == 0
		r.decryptControl(info)
		if info.env != nil && info.env.Kind == e2e.KindContent && info.p == nil && r.mayOpen(id, info) {
			r.decryptContent(id, info)
		}
		if unread && info.kind != 0 && r.logApplied && !r.restoring && info.sender != r.dev.ID {
			r.applied = append(r.applied, id) // readable only now: the audit trail hears of it now
		}
		r.authorise(id, info)
		r.extend(id, info)
		r.noteBlind(info)
	}
}

// stillBlind checks the blind flag against every op (it is set as ops are
// judged; a key arriving later clears it here).
func (r *Replica) stillBlind() bool {
	r.blind = false
	for _, info := range r.ops {
		if r.noteBlind(info); r.blind {
			return true
		}
	}
	return false
}

// noteBlind records that this device cannot read a control op of an
// authorised epoch sealed to it (its share did not open, its prekey was
// gone): its
// view of who is a member may be missing a change, so it must not send —
// or seal a new epoch to the members it believes in — until it can.
func (r *Replica) noteBlind(info *opInfo) {
	if info.env == nil || info.env.Kind != e2e.KindControl || info.p != nil {
		return
	}
	if w := r.ops[crdt.OpID(info.epoch)]; w != nil && w.valid && containsID(w.holders, r.dev.ID) && info.before.has(crdt.OpID(info.epoch)) && !r.hasControl(info.epoch) {
		r.blind = true
	}
}
