package mesh

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// Range-based set reconciliation (Aljoscha Meyer; the negentropy protocol),
// as a transport-free state machine: messages in, messages out. Each side
// holds a set of 32-byte op IDs, each with its causal key (the sender's
// clock from the envelope's signed header, e2e.Envelope.SyncKey; 0 if
// unknown), in reconciliation order: by key, then by ID — as negentropy
// orders its items by timestamp. A message is a list of contiguous ranges
// of that order, each closed by an upper bound: the shortest prefix of the
// next range's first item, written as its key (8 bytes, big-endian) and
// its ID, that separates it from this range's last. A range carries a
// fingerprint (SHA-256 of the sum of its IDs mod 2^256 and their count),
// a list of IDs with their keys, or nothing (skip). Equal fingerprints end
// a range; differing ones are split into Buckets sub-ranges, and small
// ranges are sent as lists. Rounds grow with log_Buckets(n), bytes with
// the number of differences — and since sync/8, because what two devices
// lack of each other is mostly what was written while they were apart,
// the differences lie together at the end of the order: a device back
// from an hour in the basement lists about what it missed, not the
// conversation (sync/3–7 ordered by ID, which scatters the newest ops
// over every range, so each of them cost a list of its neighbours).
//
// Every holder keys an op alike — by its envelope, or without it by the
// signed clock its DAG keeps (chat.Replica.SyncKeys) — and the order uses
// the clock without the urgency bit, which only the envelope shows. Two
// sides that key an ID differently still reconcile exactly (the ID then
// sits in different ranges on each side, and is listed); a listed ID a
// side already holds is never needed, and a side answering a list names
// only what the peer lacks. An answer stays within what a peer accepts:
// past half of it, differing ranges go back as fingerprints for the peer
// to split (Reply), so sets that differ in many places take more rounds
// instead of a refused message — and the answer is made from the newest
// range back, so that the newest differences, where what two devices
// lack of each other lies, are resolved first. At MaxRounds the initiator stops
// (Cut) and both sides fetch what they learnt so far; the device runs
// another session at once (60,000 scattered differences on each side of
// 160,000 ops take a few sessions, not one that fails every time).
//
// Keys also order what a side needs (Need), so that a fetch of many
// batches brings dependencies first. Since sync/6 a key's top bit
// (e2e.UrgentKey) says the envelope's signed header marks it urgent: Need
// puts up to urgentFirst of those first.

// Tuning.
const (
	Buckets      = 16
	ListBelow    = 8 // a range with fewer IDs is sent as a list
	MaxRounds    = 24
	MaxMsgBytes  = 4 << 20
	maxRanges    = 8192
	maxListedIDs = 1 << 16
	// maxNeed bounds what one session records as needed: beyond it the
	// rest waits for the next sync (a peer cannot make us hold an
	// unbounded set, and a fetch is never larger than this). 2^16 IDs —
	// 32 fetch batches, ≈16 MiB with the need map, the sorted list and
	// their claims (≈250 B per ID, measured by
	// TestRedteam5ConcurrentSessionsPinMemory; 2^17 pinned 32 MiB per
	// session) — so the few sessions a peer may run at once (see
	// maxInbound) pin little of a phone's heap; a device missing more
	// catches up in further rounds (syncRound runs them at once).
	maxNeed = 1 << 16
)

// loweredRounds, if positive, replaces MaxRounds: tests lower it
// (export_test.go) to reach the limit with real devices and a few ops.
var loweredRounds atomic.Int32

func roundLimit() int {
	if n := loweredRounds.Load(); n > 0 {
		return int(n)
	}
	return MaxRounds
}

// Range modes.
const (
	modeSkip  uint8 = 0
	modeFP    uint8 = 1
	modeList  uint8 = 2 // "here are mine in this range; answer with yours"
	modeFinal uint8 = 3 // "here are mine in this range"; no answer
)

type rng struct {
	Bound []byte   `cbor:"1,keyasint,omitempty"` // exclusive upper bound; empty: end of ID space
	Mode  uint8    `cbor:"2,keyasint"`
	FP    []byte   `cbor:"3,keyasint,omitempty"`
	IDs   [][]byte `cbor:"4,keyasint,omitempty"`
	Keys  []uint64 `cbor:"5,keyasint,omitempty"` // list: each ID's causal key
}

// reconMsg is a message's wire form, encoded and decoded by hand
// (recon_codec.go) to exactly detcbor's bytes for it.
type reconMsg struct {
	Ranges []rng `cbor:"1,keyasint"`
}

// Session is one side of a reconciliation.
type Session struct {
	items  []crdt.OpID // the set, ascending by ID
	keys   []uint64    // keys[i] is items[i]'s causal key
	order  []int32     // indices into items in reconciliation order: by clock, then ID
	need   map[crdt.OpID]uint64
	rounds int
	sums   *prefixSums // of order, shared with forks
	// now, if set, is the clock against which a listed urgent key stamped
	// ahead of it (beyond urgentAhead) counts as routine (needOrderAt).
	now func() time.Time
	// initiator: Initiate made this side's first message; it ends the
	// session at MaxRounds (cut) rather than failing it.
	initiator, cut bool
}

// NewSession starts a session over the IDs this side holds, with no
// causal keys (all 0).
func NewSession(ids []crdt.OpID) *Session { return NewKeyedSession(ids, nil) }

// NewKeyedSession starts a session over the IDs this side holds, keys[i]
// being ids[i]'s causal key (nil: all 0).
func NewKeyedSession(ids []crdt.OpID, keys []uint64) *Session {
	type item struct {
		id  crdt.OpID
		key uint64
	}
	all := make([]item, len(ids))
	for i, id := range ids {
		all[i].id = id
		if i < len(keys) {
			all[i].key = keys[i]
		}
	}
	slices.SortFunc(all, func(a, b item) int { return a.id.Compare(b.id) })
	all = slices.CompactFunc(all, func(a, b item) bool { return a.id == b.id })
	s := &Session{items: make([]crdt.OpID, len(all)), keys: make([]uint64, len(all)), order: make([]int32, len(all)), need: map[crdt.OpID]uint64{}, sums: new(prefixSums)}
	for i, it := range all {
		s.items[i], s.keys[i] = it.id, it.key
		s.order[i] = int32(i)
	}
	slices.SortFunc(s.order, s.compare)
	return s
}

// entry is an item as reconciliation orders it: by its clock (the causal
// key without the urgency bit, which an op kept without its envelope no
// longer shows: chat.Replica.SyncKeys), then by ID.
type entry struct {
	clock uint64
	id    crdt.OpID
}

func (a entry) compare(b entry) int {
	if c := cmp.Compare(a.clock, b.clock); c != 0 {
		return c
	}
	return a.id.Compare(b.id)
}

// bytes is e as bounds are written: its clock, big-endian, then its ID.
func (e entry) bytes() [40]byte {
	var b [40]byte
	binary.BigEndian.PutUint64(b[:8], e.clock)
	copy(b[8:], e.id[:])
	return b
}

// entry is items[i] as reconciliation orders it.
func (s *Session) entry(i int32) entry {
	return entry{clock: e2e.CausalKey(s.keys[i]), id: s.items[i]}
}

func (s *Session) compare(i, j int32) int { return s.entry(i).compare(s.entry(j)) }

// at is the i-th item in reconciliation order.
func (s *Session) at(i int) entry { return s.entry(s.order[i]) }

// fork is a new session over the same items and keys, which no session
// changes once made: sessions share them.
func (s *Session) fork() *Session {
	return &Session{items: s.items, keys: s.keys, order: s.order, need: map[crdt.OpID]uint64{}, sums: s.sums}
}

// extend is a session over ids — ascending, without repeats, a superset
// of s's items, and kept as the new session's items: the caller never
// changes it (IDsOf's sets never change) — that reuses the keys of s's
// items and asks keysOf for the keys of the others (and of items keyed
// 0): a tag that gained a few ops since its last session costs a merge,
// not a key lookup per op. It returns nil, building nothing, when ids
// are not ascending or lack an item of s.
func (s *Session) extend(ids []crdt.OpID, keysOf func([]crdt.OpID) []uint64) *Session {
	if len(ids) < len(s.items) {
		return nil
	}
	keys := make([]uint64, len(ids))
	moved := make([]int32, len(s.items)) // s's item j is ids[moved[j]]
	var fresh []int                      // indices into ids of what keysOf keys
	var was []bool                       // per fresh: an item of s (keyed 0)
	j := 0
	for i, id := range ids {
		if i > 0 && ids[i-1].Compare(id) >= 0 {
			return nil
		}
		if j < len(s.items) {
			if c := s.items[j].Compare(id); c < 0 {
				return nil // an item of s is not among ids
			} else if c == 0 {
				keys[i], moved[j] = s.keys[j], int32(i)
				j++
				if keys[i] != 0 {
					continue
				}
				fresh, was = append(fresh, i), append(was, true)
				continue
			}
		}
		fresh, was = append(fresh, i), append(was, false)
	}
	if j < len(s.items) {
		return nil
	}
	n := &Session{items: ids, keys: keys, need: map[crdt.OpID]uint64{}, sums: new(prefixSums)}
	// The order is s's with the new items (and those keyed anew) merged
	// in: a tag that gained a few ops costs a copy, not a sort.
	var add []int32
	if len(fresh) > 0 {
		want := make([]crdt.OpID, len(fresh))
		for k, i := range fresh {
			want[k] = ids[i]
		}
		got := keysOf(want)
		for k, i := range fresh {
			if k < len(got) {
				keys[i] = got[k]
			}
			if !was[k] || keys[i] != 0 {
				add = append(add, int32(i)) // new, or keyed anew
			}
		}
	}
	slices.SortFunc(add, n.compare)
	n.order = make([]int32, 0, len(ids))
	for _, o := range s.order {
		i := moved[o]
		if s.keys[o] != keys[i] {
			continue // keyed anew: among add
		}
		for len(add) > 0 && n.compare(add[0], i) < 0 {
			n.order, add = append(n.order, add[0]), add[1:]
		}
		n.order = append(n.order, i)
	}
	n.order = append(n.order, add...)
	return n
}

// Need lists the IDs the other side has and this side lacks, in the order
// to fetch them: the newest urgentFirst of those listed urgent (in causal
// key order, then ID; one stamped more than urgentAhead ahead of the
// session's clock counts as routine), then the rest by causal key
// (e2e.CausalKey), then ID. An
// urgent op comes before the ops it depends on: the fetch brings those
// next (fetch: ancestors of urgent ops). Only urgentFirst jump the queue,
// whoever marked them: a peer listing every op urgent moves one batch
// ahead of the rest, no more.
func (s *Session) Need() []crdt.OpID {
	return needOrderAt(s.need, s.clock())
}

// Urgent reports whether id (one Need lists) counts as listed urgent.
func (s *Session) Urgent(id crdt.OpID) bool { return urgentKey(s.need[id], s.clock()) }

func (s *Session) clock() time.Time {
	if s.now == nil {
		return time.Time{}
	}
	return s.now()
}

// urgentAhead is how far ahead of this device's clock a listed urgent
// key may be stamped and still count as urgent: a sender post-dating its
// urgent ops would otherwise sort them as the newest, into every urgent
// slot (needOrderAt).
const urgentAhead = time.Minute

// urgentKey reports whether listed key k counts as urgent at now: its bit
// set and, unless now is zero, its clock (milliseconds above 20 bits of
// counter: e2e.Envelope.SyncKey) not past now + urgentAhead.
func urgentKey(k uint64, now time.Time) bool {
	if k&e2e.UrgentKey == 0 {
		return false
	}
	return now.IsZero() || e2e.CausalKey(k)>>20 <= uint64(max(now.Add(urgentAhead).UnixMilli(), 0))
}

// urgentFirst is how many urgent ops one fetch brings ahead of the rest:
// one batch from a site peer.
const urgentFirst = siteBatch

// needOrder is Need's order of need (ID to listed key), with no clock.
func needOrder(need map[crdt.OpID]uint64) []crdt.OpID { return needOrderAt(need, time.Time{}) }

// needOrderAt is Need's order of need at now (see urgentKey).
func needOrderAt(need map[crdt.OpID]uint64, now time.Time) []crdt.OpID {
	out := make([]crdt.OpID, 0, len(need))
	var urgent []crdt.OpID
	for id, k := range need {
		if urgentKey(k, now) {
			urgent = append(urgent, id)
		} else {
			out = append(out, id)
		}
	}
	byKey := func(a, b crdt.OpID) int {
		if c := cmp.Compare(e2e.CausalKey(need[a]), e2e.CausalKey(need[b])); c != 0 {
			return c
		}
		return a.Compare(b)
	}
	// The newest urgent ops take the slots: older (or backdated) urgent
	// ops of one colleague cannot push a later urgent op behind the
	// routine backlog.
	slices.SortFunc(urgent, func(a, b crdt.OpID) int { return byKey(b, a) })
	first := urgent[:min(len(urgent), urgentFirst)]
	slices.SortFunc(first, byKey)
	out = append(out, urgent[len(first):]...)
	slices.SortFunc(out, byKey)
	return slices.Concat(first, out)
}

// Initiate returns the first message: the whole ID space.
func (s *Session) Initiate() ([]byte, error) {
	s.initiator = true
	return s.encode([]rng{s.describe(0, len(s.order), nil)})
}

// Reply processes a message from the other side and returns the answer, or
// nil when reconciliation is complete.
func (s *Session) Reply(msg []byte) ([]byte, error) {
	s.rounds++
	limit := roundLimit()
	if s.rounds > limit+1 || s.cut { // +1: the responder's answer to a cut
		return nil, fmt.Errorf("%w: more than %d rounds", ErrProtocol, limit+1)
	}
	ranges, err := decodeRecon(msg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	if len(ranges) == 0 {
		return nil, fmt.Errorf("%w: no ranges", ErrProtocol)
	}
	if s.rounds > limit {
		// Only a cut comes this late, and it asks for no answer.
		for _, r := range ranges {
			if r.Mode != modeSkip && r.Mode != modeFinal {
				return nil, fmt.Errorf("%w: range mode %d past the round limit", ErrProtocol, r.Mode)
			}
		}
	}
	// Each range's items [lo, hi) of order, checking bounds first.
	spans := make([][2]int, len(ranges))
	lo := 0
	var prev []byte
	for i, r := range ranges {
		last := i == len(ranges)-1
		if last != (len(r.Bound) == 0) || (prev != nil && !last && bytes.Compare(r.Bound, prev) <= 0) || len(r.Bound) > len(entry{}.bytes()) {
			return nil, fmt.Errorf("%w: range bounds out of order", ErrProtocol)
		}
		prev = r.Bound
		if listed := r.Mode == modeList || r.Mode == modeFinal; listed && len(r.Keys) != len(r.IDs) || !listed && len(r.Keys) > 0 {
			return nil, fmt.Errorf("%w: %d keys for %d listed IDs", ErrProtocol, len(r.Keys), len(r.IDs))
		}
		if r.Mode > modeFinal {
			return nil, fmt.Errorf("%w: range mode %d", ErrProtocol, r.Mode)
		}
		hi := s.upper(lo, r.Bound)
		spans[i] = [2]int{lo, hi}
		lo = hi
	}
	// An answer stays within what a peer accepts (maxRanges ranges,
	// MaxMsgBytes). Once half full (capped), it splits and lists no more:
	// each differing range goes back as our fingerprint of it, for the
	// peer to split in the next round, so the descent goes on where it
	// was; and were even that too many ranges, one fingerprint of all our
	// items up to there answers for the rest (whose lists still count).
	// Sets that differ in many places take more rounds, not a refused
	// message, and every answer splits at least one differing range.
	//
	// The answer is made from the newest range back: what two devices
	// lack of each other is mostly what was written while they were
	// apart, at the end of the order, so that is where the descent goes
	// deepest first. A session that differs everywhere (ops keyed
	// differently on each side) still reaches those lists before the
	// round limit cuts it, instead of spending every round on old ranges
	// that differ only in where each side keys them.
	out := make([]rng, 0, len(ranges)+Buckets) // pieces, newest first
	ends := make([]int, len(ranges))           // ends[i]: where range i's piece ends in out
	size, capped, fold := reconLen(nil), false, -1
	for i := len(ranges) - 1; i >= 0; i-- {
		r, lo, hi := ranges[i], spans[i][0], spans[i][1]
		capped = capped || len(out)+Buckets > maxRanges/2 || size > MaxMsgBytes/2
		if fold < 0 && len(out)+i+1+Buckets > maxRanges {
			fold = i
		}
		n := len(out)
		switch r.Mode {
		case modeSkip:
			out = append(out, rng{Bound: r.Bound, Mode: modeSkip})
		case modeFP:
			if fold >= 0 {
				break
			}
			switch fp := s.fingerprint(lo, hi); {
			case bytes.Equal(r.FP, fp):
				out = append(out, rng{Bound: r.Bound, Mode: modeSkip})
			case capped:
				out = append(out, rng{Bound: r.Bound, Mode: modeFP, FP: fp})
			default:
				out = s.split(out, lo, hi, r.Bound)
			}
		case modeList, modeFinal:
			if len(r.IDs) > maxListedIDs {
				return nil, fmt.Errorf("%w: list of %d IDs", ErrProtocol, len(r.IDs))
			}
			theirs := map[crdt.OpID]bool{}
			for i, b := range r.IDs {
				id, err := crdt.OpIDFromBytes(b)
				if err != nil {
					return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
				}
				theirs[id] = true
				// Held is held, wherever our key puts it.
				if _, ok := slices.BinarySearchFunc(s.items, id, crdt.OpID.Compare); !ok && len(s.need) < maxNeed {
					s.need[id] = r.Keys[i]
				}
			}
			if r.Mode == modeFinal || fold >= 0 {
				out = append(out, rng{Bound: r.Bound, Mode: modeSkip})
				break
			}
			extra := 0
			for _, o := range s.order[lo:hi] {
				if !theirs[s.items[o]] {
					extra++
				}
			}
			switch {
			case extra == 0:
				out = append(out, rng{Bound: r.Bound, Mode: modeSkip})
			case capped:
				out = append(out, rng{Bound: r.Bound, Mode: modeFP, FP: s.fingerprint(lo, hi)})
			case extra > listAtMost:
				// Many more of ours than they listed: split, not a list
				// of them all.
				out = s.split(out, lo, hi, r.Bound)
			default:
				// A final list needs only what they lack: they listed
				// the rest.
				out = append(out, s.listExcept(lo, hi, r.Bound, theirs))
			}
		}
		if fold >= 0 {
			out = out[:n] // the fingerprint up to fold answers for it
		}
		size += reconLen(out[n:]) - reconLen(nil)
		ends[i] = len(out)
	}
	if s.rounds > limit {
		return nil, nil // the answer to a cut: its final lists are taken, nothing goes back
	}
	// The pieces in order, oldest first.
	ordered := make([]rng, 0, len(out)+1)
	if fold >= 0 {
		ordered = append(ordered, rng{Bound: ranges[fold].Bound, Mode: modeFP, FP: s.fingerprint(0, spans[fold][1])})
	}
	for i := range ranges {
		from := 0
		if i+1 < len(ranges) {
			from = ends[i+1]
		}
		ordered = append(ordered, out[from:ends[i]]...)
	}
	out = ordered
	if allSkip(out) {
		return nil, nil
	}
	if s.initiator && s.rounds == limit {
		// The round limit: rather than fail (and learn nothing, every
		// session), stop here. What needs no answer still goes — our lists
		// as final, so the peer learns what we hold there — and what
		// would need one (fingerprints to split, lists to answer) is
		// dropped: both sides fetch what they learnt, and another session
		// goes on with a smaller difference. The peer answers this last
		// message with nothing (Reply allows it the one more round).
		for i := range out {
			switch out[i].Mode {
			case modeFP:
				out[i], s.cut = rng{Bound: out[i].Bound, Mode: modeSkip}, true
			case modeList:
				out[i].Mode, s.cut = modeFinal, true
			}
		}
		if allSkip(out) {
			return nil, nil
		}
	}
	return s.encode(merge(out))
}

// Cut reports that this side (the initiator) ended reconciliation at
// MaxRounds with ranges still differing: Need is part of what it lacks.
func (s *Session) Cut() bool { return s.cut }

// listAtMost is the most of our items a list answering a peer's list
// holds: beyond it the range is split (Reply).
const listAtMost = Buckets * ListBelow

func allSkip(rs []rng) bool {
	for _, r := range rs {
		if r.Mode != modeSkip {
			return false
		}
	}
	return true
}

// merge joins neighbouring skips into one range, in place.
func merge(rs []rng) []rng {
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && r.Mode == modeSkip && out[n-1].Mode == modeSkip {
			out[n-1].Bound = r.Bound
			continue
		}
		out = append(out, r)
	}
	return out
}

func (s *Session) encode(rs []rng) ([]byte, error) {
	b := appendRecon(make([]byte, 0, reconLen(rs)), rs)
	if len(b) > MaxMsgBytes {
		return nil, fmt.Errorf("%w: message of %d bytes", ErrProtocol, len(b))
	}
	return b, nil
}

// upper is the index in order of the first item at or after bound, from
// lo.
func (s *Session) upper(lo int, bound []byte) int {
	if len(bound) == 0 {
		return len(s.order)
	}
	i, _ := slices.BinarySearchFunc(s.order[lo:], bound, func(o int32, b []byte) int {
		k := s.entry(o).bytes()
		return bytes.Compare(k[:], b)
	})
	return lo + i
}

// describe a range of own items [lo, hi) of order closed by bound: a
// list if small, else a fingerprint.
func (s *Session) describe(lo, hi int, bound []byte) rng {
	if hi-lo < ListBelow {
		return s.list(lo, hi, bound, modeList)
	}
	return rng{Bound: bound, Mode: modeFP, FP: s.fingerprint(lo, hi)}
}

// list is the range [lo, hi) of order closed by bound as a list of
// IDs and their keys.
func (s *Session) list(lo, hi int, bound []byte, mode uint8) rng {
	r := rng{Bound: bound, Mode: mode}
	if hi > lo {
		r.IDs, r.Keys = make([][]byte, hi-lo), make([]uint64, hi-lo)
	}
	for i, o := range s.order[lo:hi] {
		r.IDs[i], r.Keys[i] = s.items[o][:], s.keys[o] // items never change once a session has them
	}
	return r
}

// listExcept is the range [lo, hi) of order closed by bound as a final
// list of the IDs (and keys) not in theirs.
func (s *Session) listExcept(lo, hi int, bound []byte, theirs map[crdt.OpID]bool) rng {
	r := rng{Bound: bound, Mode: modeFinal}
	for _, o := range s.order[lo:hi] {
		if !theirs[s.items[o]] {
			r.IDs, r.Keys = append(r.IDs, s.items[o][:]), append(r.Keys, s.keys[o])
		}
	}
	return r
}

// split divides [lo, hi) into up to Buckets sub-ranges by item count,
// appended to out. In a small set (fewer than smallSet items) it makes as
// many as leave each at least ListBelow items, and at least two: a
// conversation of a hundred ops that differs by one costs fingerprints
// and a list of the bucket that differs, not a list of every op. A large
// set keeps Buckets: fewer buckets add a level to the descent, and near
// MaxRounds a level is what a session lacks (a cold review: 300,000 ops,
// an eighth keyed 0 on one side, went from 36 messages to sessions cut
// with nothing learnt) — a small set is a few levels deep and never near.
func (s *Session) split(out []rng, lo, hi int, bound []byte) []rng {
	n := hi - lo
	if n < ListBelow {
		return append(out, s.describe(lo, hi, bound))
	}
	nb := Buckets
	if len(s.items) < smallSet {
		nb = min(max(n/ListBelow, 2), Buckets)
	}
	if n < nb*ListBelow {
		// Its buckets would be lists: one list of them all holds the
		// same IDs in one range of the answer instead of nb.
		return append(out, s.list(lo, hi, bound, modeList))
	}
	start := lo
	for b := 1; b <= nb; b++ {
		end := lo + n*b/nb
		if b == nb {
			out = append(out, s.describe(start, hi, bound))
			break
		}
		if end <= start {
			continue
		}
		out = append(out, s.describe(start, end, separator(s.at(end-1), s.at(end))))
		start = end
	}
	return out
}

// smallSet is the size below which split keeps buckets of at least
// ListBelow items: at most four levels deep (16·16·8), far from MaxRounds,
// and too few items to reach an answer's caps.
const smallSet = Buckets * Buckets * ListBelow

// separator is the shortest prefix of b's bytes that is greater than a's.
func separator(a, b entry) []byte {
	x, y := a.bytes(), b.bytes()
	for i := range y {
		if x[i] != y[i] {
			return slices.Clone(y[:i+1])
		}
	}
	return slices.Clone(y[:])
}

// fingerprint of [lo, hi) of order: SHA-256(sum of IDs mod 2^256,
// little-endian ‖ count), first 16 bytes.
// A range of at least prefixFrom items takes its sum from the session's
// prefix sums (made once, shared with every fork): each level of a split
// would otherwise add up every item again.
func (s *Session) fingerprint(lo, hi int) []byte {
	if hi-lo < prefixFrom || s.sums == nil {
		var acc [4]uint64
		for _, o := range s.order[lo:hi] {
			acc = add256(acc, s.items[o])
		}
		return fingerprintOfSum(acc, hi-lo)
	}
	s.sums.once.Do(func() {
		s.sums.at = make([][4]uint64, len(s.order)+1)
		for i, o := range s.order {
			s.sums.at[i+1] = add256(s.sums.at[i], s.items[o])
		}
	})
	a, b := s.sums.at[lo], s.sums.at[hi]
	var diff [4]uint64
	var borrow uint64
	for w := range 4 {
		diff[w], borrow = bits.Sub64(b[w], a[w], borrow)
	}
	return fingerprintOfSum(diff, hi-lo)
}

// prefixFrom: below this many items a range is summed directly.
const prefixFrom = 64

// prefixSums: at[i] is the sum of a session's first i items (in order) mod 2^256
// (little-endian words), made on first use.
type prefixSums struct {
	once sync.Once
	at   [][4]uint64
}

// add256 is acc + id mod 2^256, id read as a little-endian number.
func add256(acc [4]uint64, id crdt.OpID) [4]uint64 {
	var carry uint64
	for w := range 4 {
		acc[w], carry = bits.Add64(acc[w], binary.LittleEndian.Uint64(id[w*8:]), carry)
	}
	return acc
}

// fingerprintOfSum is the fingerprint of n IDs that add up to sum.
func fingerprintOfSum(sum [4]uint64, n int) []byte {
	var buf [40]byte
	for w := range 4 {
		binary.LittleEndian.PutUint64(buf[w*8:], sum[w])
	}
	binary.LittleEndian.PutUint64(buf[32:], uint64(n))
	h := sha256.Sum256(buf[:])
	return h[:16]
}

// Fingerprint of a set of op IDs (distinct, in any order): what a range
// of them carries in reconciliation, and a tag's entry in a sync offer.
func Fingerprint(ids []crdt.OpID) []byte {
	var acc [4]uint64
	for _, id := range ids {
		acc = add256(acc, id)
	}
	return fingerprintOfSum(acc, len(ids))
}
