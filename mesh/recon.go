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
	"time"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// Range-based set reconciliation (Aljoscha Meyer; the negentropy protocol),
// as a transport-free state machine: messages in, messages out. Each side
// holds a sorted set of 32-byte op IDs. A message is a list of contiguous
// ranges, each closed by an upper bound (the shortest prefix that separates
// it from the next range); a range carries a fingerprint (SHA-256 of the sum
// of its IDs mod 2^256 and their count), a list of IDs, or nothing (skip).
// Equal fingerprints end a range; differing ones are split into Buckets
// sub-ranges, and small ranges are sent as ID lists. Rounds grow with
// log_Buckets(n), bytes with the number of differences.
//
// Since sync/3 a listed ID carries its causal key, as negentropy's items
// carry timestamps: the key its lister gives it (the sender's clock from
// the envelope's signed header, e2e.Envelope.SyncKey; 0 if unknown). Keys
// do not take part in fingerprints or bounds — two sides that key an ID
// differently still reconcile exactly — they only order what a side needs
// (Need), so that a fetch of many batches brings dependencies first. Since
// sync/6 a key's top bit (e2e.UrgentKey) says the envelope's signed header
// marks it urgent: Need puts up to urgentFirst of those first.

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
	items  []crdt.OpID // sorted
	keys   []uint64    // keys[i] is items[i]'s causal key
	need   map[crdt.OpID]uint64
	rounds int
	sums   *prefixSums // of items, shared with forks
	// now, if set, is the clock against which a listed urgent key stamped
	// ahead of it (beyond urgentAhead) counts as routine (needOrderAt).
	now func() time.Time
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
	s := &Session{items: make([]crdt.OpID, len(all)), keys: make([]uint64, len(all)), need: map[crdt.OpID]uint64{}, sums: new(prefixSums)}
	for i, it := range all {
		s.items[i], s.keys[i] = it.id, it.key
	}
	return s
}

// fork is a new session over the same items and keys, which no session
// changes once made: sessions share them.
func (s *Session) fork() *Session {
	return &Session{items: s.items, keys: s.keys, need: map[crdt.OpID]uint64{}, sums: s.sums}
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
	var fresh []int // indices into ids of what keysOf keys
	j := 0
	for i, id := range ids {
		if i > 0 && ids[i-1].Compare(id) >= 0 {
			return nil
		}
		if j < len(s.items) {
			if c := s.items[j].Compare(id); c < 0 {
				return nil // an item of s is not among ids
			} else if c == 0 {
				keys[i] = s.keys[j]
				j++
				if keys[i] != 0 {
					continue
				}
			}
		}
		fresh = append(fresh, i)
	}
	if j < len(s.items) {
		return nil
	}
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
		}
	}
	return &Session{items: ids, keys: keys, need: map[crdt.OpID]uint64{}, sums: new(prefixSums)}
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
	return s.encode([]rng{s.describe(0, len(s.items), nil)})
}

// Reply processes a message from the other side and returns the answer, or
// nil when reconciliation is complete.
func (s *Session) Reply(msg []byte) ([]byte, error) {
	s.rounds++
	if s.rounds > MaxRounds {
		return nil, fmt.Errorf("%w: more than %d rounds", ErrProtocol, MaxRounds)
	}
	ranges, err := decodeRecon(msg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	if len(ranges) == 0 {
		return nil, fmt.Errorf("%w: no ranges", ErrProtocol)
	}
	out := make([]rng, 0, len(ranges)+Buckets)
	lo := 0 // index of the first item in the current range
	var prev []byte
	for i, r := range ranges {
		last := i == len(ranges)-1
		if last != (len(r.Bound) == 0) || (prev != nil && !last && bytes.Compare(r.Bound, prev) <= 0) || len(r.Bound) > 32 {
			return nil, fmt.Errorf("%w: range bounds out of order", ErrProtocol)
		}
		prev = r.Bound
		if listed := r.Mode == modeList || r.Mode == modeFinal; listed && len(r.Keys) != len(r.IDs) || !listed && len(r.Keys) > 0 {
			return nil, fmt.Errorf("%w: %d keys for %d listed IDs", ErrProtocol, len(r.Keys), len(r.IDs))
		}
		hi := s.upper(lo, r.Bound)
		switch r.Mode {
		case modeSkip:
			out = append(out, rng{Bound: r.Bound, Mode: modeSkip})
		case modeFP:
			if bytes.Equal(r.FP, s.fingerprint(lo, hi)) {
				out = append(out, rng{Bound: r.Bound, Mode: modeSkip})
			} else {
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
				if _, ok := slices.BinarySearchFunc(s.items[lo:hi], id, crdt.OpID.Compare); !ok && len(s.need) < maxNeed {
					s.need[id] = r.Keys[i]
				}
			}
			if r.Mode == modeFinal {
				out = append(out, rng{Bound: r.Bound, Mode: modeSkip})
				break
			}
			mine := rng{Bound: r.Bound, Mode: modeFinal, IDs: make([][]byte, 0, hi-lo), Keys: s.keys[lo:hi:hi]}
			extra := false
			for i := lo; i < hi; i++ {
				mine.IDs = append(mine.IDs, s.items[i][:]) // items never change once a session has them
				extra = extra || !theirs[s.items[i]]
			}
			if !extra {
				mine = rng{Bound: r.Bound, Mode: modeSkip}
			}
			out = append(out, mine)
		default:
			return nil, fmt.Errorf("%w: range mode %d", ErrProtocol, r.Mode)
		}
		lo = hi
	}
	if allSkip(out) {
		return nil, nil
	}
	return s.encode(merge(out))
}

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

// upper is the index of the first item at or after bound, from lo.
func (s *Session) upper(lo int, bound []byte) int {
	if len(bound) == 0 {
		return len(s.items)
	}
	i, _ := slices.BinarySearchFunc(s.items[lo:], bound, func(id crdt.OpID, b []byte) int { return bytes.Compare(id[:], b) })
	return lo + i
}

// describe a range of own items [lo, hi) closed by bound: a list if small,
// else a fingerprint.
func (s *Session) describe(lo, hi int, bound []byte) rng {
	if hi-lo < ListBelow {
		r := rng{Bound: bound, Mode: modeList, Keys: s.keys[lo:hi:hi]}
		if hi > lo {
			r.IDs = make([][]byte, hi-lo)
		}
		for i := range r.IDs {
			r.IDs[i] = s.items[lo+i][:]
		}
		return r
	}
	return rng{Bound: bound, Mode: modeFP, FP: s.fingerprint(lo, hi)}
}

// split divides [lo, hi) into up to Buckets sub-ranges by item count,
// appended to out.
func (s *Session) split(out []rng, lo, hi int, bound []byte) []rng {
	n := hi - lo
	if n < ListBelow {
		return append(out, s.describe(lo, hi, bound))
	}
	start := lo
	for b := 1; b <= Buckets; b++ {
		end := lo + n*b/Buckets
		if b == Buckets {
			out = append(out, s.describe(start, hi, bound))
			break
		}
		if end <= start {
			continue
		}
		out = append(out, s.describe(start, end, separator(s.items[end-1], s.items[end])))
		start = end
	}
	return out
}

// separator is the shortest prefix of b that is greater than a.
func separator(a, b crdt.OpID) []byte {
	for i := range b {
		if a[i] != b[i] {
			return slices.Clone(b[:i+1])
		}
	}
	return slices.Clone(b[:])
}

// fingerprint of [lo, hi): SHA-256(sum of IDs mod 2^256, little-endian ‖
// count), first 16 bytes.
// A range of at least prefixFrom items takes its sum from the session's
// prefix sums (made once, shared with every fork): each level of a split
// would otherwise add up every item again.
func (s *Session) fingerprint(lo, hi int) []byte {
	if hi-lo < prefixFrom || s.sums == nil {
		return Fingerprint(s.items[lo:hi])
	}
	s.sums.once.Do(func() {
		s.sums.at = make([][4]uint64, len(s.items)+1)
		for i, id := range s.items {
			s.sums.at[i+1] = add256(s.sums.at[i], id)
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

// prefixSums: at[i] is the sum of a session's first i items mod 2^256
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
