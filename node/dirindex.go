package node

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// directory is the node's staff directory: every colleague's entry
// (certificate chain and signed prekey) in the store, and a small index of
// them in memory. It offers colleagues — Directory, LookupStaff, Recipient
// — only while no CRL the node holds revokes them, and keeps the entries of
// revoked ones (KnownStaff judges their old messages by them).
//
// Invariants, under mu:
//   - entries indexes exactly the entries in the store; an entry is
//     written to the store before it is indexed, and both change under mu.
//   - sums holds the sum of every indexed entry and nothing else.
//   - seq is the highest entry seq; sent[p] ≤ seq.
//   - an entry's judged is gen+1 when revoked is the judgement of its
//     certificate under CRL generation gen (verifier.generation), else 0;
//     a new certificate starts unjudged.
//
// mu is held across the store calls of add (a read-modify-write of one
// entry), never across calls to the verifier.
type directory struct {
	ctx   context.Context // the node's: store calls end at Close
	store ds.Batching
	log   *slog.Logger
	now   func() time.Time
	v     verifier

	mu      sync.Mutex
	entries map[peer.ID]entry
	sums    map[entrySum]struct{}
	seq     uint64             // bumped by every directory change
	sent    map[peer.ID]uint64 // seq as of the last directory a peer took from us
}

// verifier is what the directory asks of the trust (the admission part).
type verifier interface {
	// learnIssuers learns the issuing CAs of a stored chain.
	learnIssuers(chain []*x509.Certificate, now time.Time)
	// generation changes with every newer CRL.
	generation() int64
	// isRevoked reports whether a CRL held revokes the chain.
	isRevoked(chain []*x509.Certificate, id peer.ID, now time.Time) bool
}

func newDirectory(ctx context.Context, store ds.Batching, log *slog.Logger, now func() time.Time, v verifier) *directory {
	return &directory{ctx: ctx, store: store, log: log, now: now, v: v,
		entries: map[peer.ID]entry{}, sums: map[entrySum]struct{}{}, sent: map[peer.ID]uint64{}}
}

// entry is what a device keeps in memory of a colleague's directory entry:
// enough to judge whether an incoming entry is newer and to find a colleague
// by staff ID. The entry itself (certificate chain and signed prekey) is in
// the store — a device holds one per colleague, thousands in a large trust,
// and their certificates and KEM keys do not belong on the heap.
type entry struct {
	staffID  string
	serial   string // leaf certificate serial, big-endian
	notAfter int64  // leaf certificate expiry, Unix seconds
	prekey   int64  // creation time of the newest verified prekey; 0: none
	sum      entrySum
	seq      uint64 // directory.seq when it last changed
	judged   int64  // CRL generation+1 revoked was judged under; 0: not judged
	revoked  bool
}

// entrySum identifies a stored entry's leaf certificate and prekey: what
// directory sync offers, and how an entry we already hold (the common case
// on the trust topic) is dropped without verifying its chain again. A
// collision could only make us drop an entry, never accept one.
type entrySum [entrySumSize]byte

const entrySumSize = 16

func sumOf(d dirEntry) entrySum {
	h := sha256.New()
	if len(d.Chain) > 0 {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(d.Chain[0])))
		h.Write(n[:])
		h.Write(d.Chain[0])
	}
	h.Write(d.Prekey)
	var s entrySum
	copy(s[:], h.Sum(nil))
	return s
}

func entryKey(id peer.ID) ds.Key { return entryPrefix.ChildString(id.String()) }

// holds reports whether the directory holds exactly this entry.
func (d *directory) holds(de dirEntry) bool {
	return len(de.Chain) > 0 && d.holdsSum(sumOf(de))
}

// holdsSum reports whether the directory holds the entry with this digest.
func (d *directory) holdsSum(s entrySum) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.sums[s]
	return ok
}

// add records a verified chain (and prekey, if any and valid) in the
// directory and persists it. It reports whether the entry changed, whether
// its certificate did, and the entry as stored.
func (d *directory) add(chain []*x509.Certificate, s *identity.Staff, prekey []byte) (changed, newCert bool, stored dirEntry) {
	var pk *e2e.Prekey
	if prekey != nil {
		if p, err := e2e.DecodePrekey(prekey); err == nil && string(p.Owner) == string(s.PeerID) {
			pk = p
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old, had := d.entries[s.PeerID]
	newCert = !had || (old.serial != string(s.Serial.Bytes()) && old.notAfter <= s.NotAfter.Unix())
	newPrekey := pk != nil && (!had || pk.Created > old.prekey)
	if !newCert && !newPrekey {
		return false, false, stored
	}
	stored = dirEntry{Chain: encodeChain(chain)}
	if newPrekey {
		stored.Prekey = prekey
	}
	if had && (!newCert || !newPrekey) {
		prev, err := d.stored(s.PeerID)
		if err != nil {
			d.log.Error("read directory entry", "err", err)
			return false, false, stored
		}
		if !newCert {
			stored.Chain = prev.Chain
		}
		if !newPrekey {
			stored.Prekey = prev.Prekey
		}
	}
	raw, err := detcbor.Marshal(stored)
	if err == nil {
		err = d.store.Put(d.ctx, entryKey(s.PeerID), raw)
	}
	if err != nil {
		d.log.Error("persist directory entry", "err", err)
		return false, false, stored
	}
	e := old
	if newCert {
		e = certIndex(s)
		e.prekey = old.prekey
	}
	if newPrekey {
		e.prekey = pk.Created
	}
	d.indexLocked(s.PeerID, e, stored)
	return true, newCert, stored
}

// certIndex is the part of the index a leaf certificate gives.
func certIndex(s *identity.Staff) entry {
	return entry{staffID: s.StaffID, serial: string(s.Serial.Bytes()), notAfter: s.NotAfter.Unix()}
}

// indexLocked records e as the index of id's stored entry de: its digest
// and a new change sequence number. Callers hold mu.
func (d *directory) indexLocked(id peer.ID, e entry, de dirEntry) {
	if old, ok := d.entries[id]; ok {
		delete(d.sums, old.sum)
	}
	d.seq++
	e.sum, e.seq = sumOf(de), d.seq
	d.entries[id] = e
	d.sums[e.sum] = struct{}{}
}

// load reads the index back from the stored entries, learning the issuing
// CAs of their chains.
func (d *directory) load(ctx context.Context) error {
	res, err := d.store.Query(ctx, query.Query{Prefix: entryPrefix.String()})
	if err != nil {
		return fmt.Errorf("load directory: %w", err)
	}
	for r := range res.Next() {
		if r.Error != nil {
			return fmt.Errorf("load directory: %w", r.Error)
		}
		var de dirEntry
		if decode(r.Value, &de, maxEntryBytes) != nil {
			continue
		}
		chain, err := decodeChain(de.Chain)
		if err != nil {
			continue
		}
		d.v.learnIssuers(chain, d.now())
		if s, err := identity.StaffFromCert(chain[0]); err == nil {
			e := certIndex(s)
			if p, err := e2e.DecodePrekey(de.Prekey); err == nil && string(p.Owner) == string(s.PeerID) {
				e.prekey = p.Created
			}
			d.mu.Lock()
			d.indexLocked(s.PeerID, e, de)
			d.mu.Unlock()
		}
	}
	return nil
}

// stored reads a colleague's entry from the store.
func (d *directory) stored(id peer.ID) (dirEntry, error) {
	var de dirEntry
	raw, err := d.store.Get(d.ctx, entryKey(id))
	switch {
	case errors.Is(err, ds.ErrNotFound):
		return de, fmt.Errorf("%w: %s is not in the directory", ErrUnknownPeer, id)
	case err != nil:
		return de, fmt.Errorf("read directory entry: %w", err)
	}
	if err := decode(raw, &de, maxEntryBytes); err != nil || len(de.Chain) == 0 {
		return de, fmt.Errorf("directory entry of %s: %w", id, identity.ErrMalformed)
	}
	return de, nil
}

// storedChain reads a colleague's certificate chain from the store,
// revoked or not (KnownStaff).
func (d *directory) storedChain(id peer.ID) ([]*x509.Certificate, error) {
	de, err := d.stored(id)
	if err != nil {
		return nil, err
	}
	return decodeChain(de.Chain)
}

// colleague reads a colleague's entry from the store and returns the staff
// its certificate names, or an error wrapping ErrRevoked when a CRL held
// revokes it. The judgement is cached per entry until the next newer CRL.
func (d *directory) colleague(id peer.ID) (*identity.Staff, dirEntry, error) {
	gen := d.v.generation() // before judging: see admission's invariants
	de, err := d.stored(id)
	if err != nil {
		return nil, de, err
	}
	leaf, err := x509.ParseCertificate(de.Chain[0])
	if err != nil {
		return nil, de, fmt.Errorf("directory entry of %s: %w: %v", id, identity.ErrMalformed, err)
	}
	s, err := identity.StaffFromCert(leaf)
	if err != nil {
		return nil, de, err
	}
	serial := string(s.Serial.Bytes())
	d.mu.Lock()
	e, ok := d.entries[id]
	d.mu.Unlock()
	revoked := e.revoked
	if !ok || e.serial != serial || e.judged != gen+1 {
		chain, err := decodeChain(de.Chain)
		if err != nil {
			return nil, de, fmt.Errorf("directory entry of %s: %w", id, err)
		}
		revoked = d.v.isRevoked(chain, id, d.now())
		d.mu.Lock()
		if e, ok := d.entries[id]; ok && e.serial == serial {
			e.judged, e.revoked = gen+1, revoked
			d.entries[id] = e
		}
		d.mu.Unlock()
	}
	if revoked {
		return nil, de, fmt.Errorf("%w: %s", ErrRevoked, id)
	}
	return s, de, nil
}

// recipient is where to seal a welcome for colleague id — its newest
// verified prekey, else (last resort) its certificate's KEM key.
func (d *directory) recipient(id peer.ID, now time.Time) (e2e.Recipient, error) {
	s, de, err := d.colleague(id)
	if err != nil {
		return e2e.Recipient{}, err
	}
	if p, err := e2e.DecodePrekey(de.Prekey); err == nil && string(p.Owner) == string(id) &&
		now.Sub(time.Unix(p.Created, 0)) < e2e.PrekeyRotation+e2e.PrekeyWindow {
		return e2e.Recipient{ID: id, PrekeyID: p.ID, KEM: p.KEM}, nil
	}
	return e2e.Recipient{ID: id, KEM: s.KEMKey}, nil
}

// list is every colleague not revoked, sorted by name, read from the store.
func (d *directory) list() []StaffInfo {
	d.mu.Lock()
	ids := make([]peer.ID, 0, len(d.entries))
	for id := range d.entries {
		ids = append(ids, id)
	}
	d.mu.Unlock()
	out := make([]StaffInfo, 0, len(ids))
	for _, id := range ids {
		if s, _, err := d.colleague(id); err == nil {
			out = append(out, staffInfo(s))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// size is the number of entries held, revoked ones included.
// has reports whether the directory holds an entry for id (a colleague
// whose certificate chain verified when it was stored).
func (d *directory) has(id peer.ID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.entries[id]
	return ok
}

func (d *directory) size() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.entries)
}

// lookup finds a colleague not revoked by peer ID or staff ID. A staff
// member may have several devices: a revoked one is passed over for
// another.
func (d *directory) lookup(key string) (*identity.Staff, bool) {
	var ids []peer.ID
	d.mu.Lock()
	if id, err := peer.Decode(key); err == nil {
		if _, ok := d.entries[id]; ok {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		for id, e := range d.entries {
			if e.staffID == key {
				ids = append(ids, id)
			}
		}
	}
	d.mu.Unlock()
	slices.Sort(ids)
	for _, id := range ids {
		if s, _, err := d.colleague(id); err == nil {
			return s, true
		}
	}
	return nil, false
}

// offer is what a directory sync offers to: the digests of the entries
// changed since to last took ours (but to's own), by digest, and the
// sequence number to record once to has taken them (markSent).
func (d *directory) offer(to peer.ID) (bySum map[entrySum]peer.ID, sums [][]byte, upto uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	since := d.sent[to]
	bySum = map[entrySum]peer.ID{}
	for pid, e := range d.entries {
		if e.seq > since && pid != to && len(sums) < maxDirEntries {
			bySum[e.sum] = pid
			sums = append(sums, e.sum[:])
		}
	}
	return bySum, sums, d.seq
}

// markSent records that to took our directory as of upto.
func (d *directory) markSent(to peer.ID, upto uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sent[to] = max(d.sent[to], upto)
}
