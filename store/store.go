package store

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pebbleds "github.com/ipfs/go-ds-pebble"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"

	"github.com/medmesh/medmesh/internal/atomicfile"
	"github.com/medmesh/medmesh/keywrap"
)

// Files inside the store directory.
const (
	KeyFile = "key"  // the wrapped data key
	DataDir = "data" // the embedded pebble database
)

const keyLabel = "medmesh store data key"

// Store is an encrypting datastore. Create it with Open.
type Store struct {
	backend ds.Batching
	owned   bool // we opened backend and close it
	dir     string

	mu       sync.RWMutex // guards aead and nameKey against Wipe
	aead     aeadCipher
	macs     sync.Pool // of keyed HMAC-SHA256 for key names
	parents  sync.Map  // parent key → its hashed name
	nparents atomic.Int64

	// Purging deleted values from disk (embedded pebble only: db non-nil).
	db         *pebble.DB
	log        *slog.Logger
	purgeDelay time.Duration
	purgeMu    sync.Mutex // one purge at a time
	pmu        sync.Mutex // guards dirty and dirtyAll
	dirty      map[string]struct{}
	dirtyAll   bool
	kick       chan struct{}
	stop       chan struct{}
	wg         sync.WaitGroup
	closed     bool // guarded by purgeMu

	// life guards gone: a method holds it (read) across its backend calls,
	// so Close and Wipe close the backend only when none is in flight and
	// later calls fail with ErrClosed or ErrWiped instead of reaching a
	// closed database (pebble panics).
	life      sync.RWMutex
	gone      error
	closeOnce sync.Once
	closeErr  error
}

type aeadCipher interface {
	Seal(dst, nonce, plaintext, additionalData []byte) []byte
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
}

// Option configures Open.
type Option func(*config) error

type config struct {
	backend    ds.Batching
	kdf        keywrap.Params
	purgeDelay time.Duration
	log        *slog.Logger
}

// WithBackend uses b instead of the embedded pebble database. The caller
// keeps ownership of b.
func WithBackend(b ds.Batching) Option {
	return func(c *config) error { c.backend = b; return nil }
}

// WithKDF sets the argon2id cost used when a new data key is wrapped.
func WithKDF(p keywrap.Params) Option {
	return func(c *config) error { c.kdf = p; return nil }
}

// WithPurgeDelay sets how long after a delete the store purges deleted
// values from disk (default DefaultPurgeDelay); deletes within the delay
// share one purge.
func WithPurgeDelay(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return errors.New("purge delay must be positive")
		}
		c.purgeDelay = d
		return nil
	}
}

// WithLogger sets the logger for background purges (default: discard).
func WithLogger(l *slog.Logger) Option { return func(c *config) error { c.log = l; return nil } }

// Open opens (or creates) the encrypted store in dir, unwrapping its data key
// with passphrase.
func Open(dir string, passphrase []byte, opts ...Option) (*Store, error) {
	c := config{kdf: keywrap.DefaultParams, purgeDelay: DefaultPurgeDelay, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	dataKey, err := loadOrCreateKey(dir, passphrase, c)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	s := &Store{backend: c.backend, dir: dir, log: c.log, purgeDelay: c.purgeDelay,
		dirty: map[string]struct{}{}, kick: make(chan struct{}, 1), stop: make(chan struct{})}
	if err := s.setKeys(dataKey); err != nil {
		return nil, err
	}
	if s.backend == nil {
		p, err := pebbleds.NewDatastore(filepath.Join(dir, DataDir), pebbleds.WithPebbleOpts(pebbleOptions()))
		if err != nil {
			return nil, fmt.Errorf("open store %s: %w", dir, err)
		}
		s.backend, s.owned, s.db = p, true, p.DB
		s.wg.Add(1)
		go s.purgeLoop()
	}
	return s, nil
}

func loadOrCreateKey(dir string, passphrase []byte, c config) ([]byte, error) {
	path := filepath.Join(dir, KeyFile)
	raw, err := os.ReadFile(path)
	if err == nil {
		return keywrap.Open(passphrase, raw, keyLabel)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if c.backend == nil {
		if ents, _ := os.ReadDir(filepath.Join(dir, DataDir)); len(ents) > 0 {
			return nil, ErrOrphan
		}
	}
	key := make([]byte, chacha20poly1305.KeySize)
	rand.Read(key)
	sealed, err := keywrap.Seal(passphrase, key, keyLabel, c.kdf)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.CreateExclusive(path, sealed, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// enter admits a call to the backend until Close or Wipe; the caller
// runs s.life.RUnlock when done.
func (s *Store) enter() error {
	s.life.RLock()
	if s.gone != nil {
		s.life.RUnlock()
		return s.gone
	}
	return nil
}

// setKeys derives the value cipher and the name-hashing key from the data key.
func (s *Store) setKeys(dataKey []byte) error {
	valueKey := make([]byte, chacha20poly1305.KeySize)
	nameKey := make([]byte, 32)
	r := hkdf.New(sha256.New, dataKey, nil, []byte("medmesh store v1"))
	if _, err := r.Read(valueKey); err != nil {
		return err
	}
	if _, err := r.Read(nameKey); err != nil {
		return err
	}
	s.macs.New = func() any { return hmac.New(sha256.New, nameKey) }
	a, err := chacha20poly1305.NewX(valueKey)
	if err != nil {
		return err
	}
	s.aead = a
	clear(dataKey)
	clear(valueKey)
	return nil
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// hashKey maps a key to its stored name: each component is replaced by a
// keyed hash chained over its parents.
func (s *Store) hashKey(k ds.Key) (ds.Key, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.aead == nil {
		return ds.Key{}, ErrWiped
	}
	h := s.macs.Get().(hash.Hash)
	defer s.macs.Put(h)
	// Keys under one parent are common (ops of one conversation): hash the
	// parent once and remember it.
	parent := k.Parent()
	if parent.String() == "/" || k.String() == "/" {
		return hashWith(h, k, ds.Key{}), nil
	}
	if hp, ok := s.parents.Load(parent.String()); ok {
		return childName(h, hp.(hashedParent), k.BaseNamespace()), nil
	}
	hp := hashWith(h, parent, ds.Key{})
	if s.nparents.Add(1) < maxParentCache {
		p := hashedParent{name: hp.String()}
		b32.Decode(p.prev[:], []byte(hp.BaseNamespace()))
		s.parents.Store(parent.String(), p)
	}
	return hashWith(h, ds.NewKey(k.BaseNamespace()), hp), nil
}

// hashedParent is a parent key's hashed name and the chain value its
// children's hashes continue.
type hashedParent struct {
	name string
	prev [16]byte
}

// childName is hashWith(h, ds.NewKey(comp), parent's name) for one clean
// component comp, in one allocation.
func childName(h hash.Hash, p hashedParent, comp string) ds.Key {
	if comp == "" || comp == "." || comp == ".." {
		return hashWith(h, ds.NewKey(comp), ds.RawKey(p.name))
	}
	var sum [32]byte
	h.Reset()
	h.Write(p.prev[:])
	io.WriteString(h, comp)
	h.Sum(sum[:0])
	var b strings.Builder
	b.Grow(len(p.name) + 1 + 26)
	b.WriteString(p.name)
	b.WriteByte('/')
	var enc [26]byte
	b32.Encode(enc[:], sum[:16])
	b.Write(enc[:])
	return ds.RawKey(b.String())
}

// maxParentCache bounds the parent-name cache.
const maxParentCache = 4096

// hashWith hashes the components of k with h, a keyed HMAC reset between
// components, continuing the chain of the already hashed parent hp.
func hashWith(h hash.Hash, k ds.Key, hp ds.Key) ds.Key {
	var b strings.Builder
	var prev, sum [32]byte
	var enc [26]byte
	if hp.String() != "/" && hp.String() != "" {
		b.WriteString(hp.String())
		b32.Decode(prev[:], []byte(hp.BaseNamespace()))
	}
	for _, comp := range k.List() {
		if comp == "" {
			continue // the root key "/" has one empty component
		}
		h.Reset()
		h.Write(prev[:16])
		h.Write([]byte(comp))
		h.Sum(sum[:0])
		copy(prev[:16], sum[:16])
		b32.Encode(enc[:], prev[:16])
		b.WriteByte('/')
		b.Write(enc[:])
	}
	if b.Len() == 0 {
		return ds.NewKey("/")
	}
	return ds.RawKey(b.String())
}

// seal encrypts key and value under the stored name, in one allocation.
func (s *Store) seal(k, stored ds.Key, value []byte) ([]byte, error) {
	buf := make([]byte, sealedLen(k, value))
	if err := s.sealInto(buf, k, stored, value); err != nil {
		return nil, err
	}
	return buf, nil
}

// sealedLen is the length of the sealed value of k and value.
func sealedLen(k ds.Key, value []byte) int {
	kb := len(k.String())
	return chacha20poly1305.NonceSizeX + uvarintLen(uint64(kb)) + kb + len(value) + chacha20poly1305.Overhead
}

func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

// sealInto seals key and value under the stored name into dst, which is
// sealedLen(k, value) bytes long: nonce, then the ciphertext of the
// key's length, the key and the value, sealed in place.
func (s *Store) sealInto(dst []byte, k, stored ds.Key, value []byte) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.aead == nil {
		return ErrWiped
	}
	kb := k.String()
	const ns = chacha20poly1305.NonceSizeX
	rand.Read(dst[:ns])
	n := ns + binary.PutUvarint(dst[ns:], uint64(len(kb)))
	n += copy(dst[n:], kb)
	n += copy(dst[n:], value)
	// dst[:ns] has room for exactly the ciphertext: Seal writes in place.
	s.aead.Seal(dst[:ns], dst[:ns], dst[ns:n], []byte(stored.String()))
	return nil
}

// open decrypts a stored value and returns the original key and value.
func (s *Store) open(stored ds.Key, sealed []byte) (ds.Key, []byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.aead == nil {
		return ds.Key{}, nil, ErrWiped
	}
	if len(sealed) < chacha20poly1305.NonceSizeX+chacha20poly1305.Overhead {
		return ds.Key{}, nil, fmt.Errorf("%w: %s", ErrCorrupt, stored)
	}
	plain, err := s.aead.Open(nil, sealed[:chacha20poly1305.NonceSizeX], sealed[chacha20poly1305.NonceSizeX:], stored.Bytes())
	if err != nil {
		return ds.Key{}, nil, fmt.Errorf("%w: %s", ErrCorrupt, stored)
	}
	n, w := binary.Uvarint(plain)
	if w <= 0 || n > uint64(len(plain)-w) {
		return ds.Key{}, nil, fmt.Errorf("%w: %s", ErrCorrupt, stored)
	}
	return ds.RawKey(string(plain[w : w+int(n)])), plain[w+int(n):], nil
}

// Get implements ds.Read.
func (s *Store) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.life.RUnlock()
	stored, err := s.hashKey(k)
	if err != nil {
		return nil, err
	}
	sealed, err := s.backend.Get(ctx, stored)
	if err != nil {
		return nil, err
	}
	orig, v, err := s.open(stored, sealed)
	if err != nil {
		return nil, err
	}
	if !orig.Equal(k) {
		return nil, fmt.Errorf("%w: %s", ErrCorrupt, stored)
	}
	return v, nil
}

// Sealed returns the bytes the backend holds for k: the sealed value, as
// on disk. It is for forensic checks (tests scanning the disk for a value
// that must be gone); it needs no key beyond the name's.
func (s *Store) Sealed(ctx context.Context, k ds.Key) ([]byte, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.life.RUnlock()
	stored, err := s.hashKey(k)
	if err != nil {
		return nil, err
	}
	return s.backend.Get(ctx, stored)
}

// Has implements ds.Read.
func (s *Store) Has(ctx context.Context, k ds.Key) (bool, error) {
	if err := s.enter(); err != nil {
		return false, err
	}
	defer s.life.RUnlock()
	stored, err := s.hashKey(k)
	if err != nil {
		return false, err
	}
	return s.backend.Has(ctx, stored)
}

// GetSize implements ds.Read.
func (s *Store) GetSize(ctx context.Context, k ds.Key) (int, error) {
	v, err := s.Get(ctx, k)
	if err != nil {
		return -1, err
	}
	return len(v), nil
}

// Put implements ds.Write.
func (s *Store) Put(ctx context.Context, k ds.Key, value []byte) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	stored, err := s.hashKey(k)
	if err != nil {
		return err
	}
	sealed, err := s.seal(k, stored, value)
	if err != nil {
		return err
	}
	return s.backend.Put(ctx, stored, sealed)
}

// Delete implements ds.Write. The value leaves the disk at the next
// purge (PurgeDelay later, or Purge).
func (s *Store) Delete(ctx context.Context, k ds.Key) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	stored, err := s.hashKey(k)
	if err != nil {
		return err
	}
	if err := s.backend.Delete(ctx, stored); err != nil {
		return err
	}
	s.markDeleted(stored.String())
	return nil
}

// Sync implements ds.Datastore.
func (s *Store) Sync(ctx context.Context, prefix ds.Key) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	stored, err := s.hashKey(prefix)
	if err != nil {
		return err
	}
	return s.backend.Sync(ctx, stored)
}

// Query implements ds.Read. The prefix is applied by the backend on hashed
// names; filters, orders, offset and limit are applied here on plaintext.
func (s *Store) Query(ctx context.Context, q query.Query) (query.Results, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.life.RUnlock()
	prefix, err := s.hashKey(ds.NewKey(q.Prefix))
	if err != nil {
		return nil, err
	}
	inner, err := s.backend.Query(ctx, query.Query{Prefix: prefix.String()})
	if err != nil {
		return nil, err
	}
	decrypted := query.ResultsFromIterator(query.Query{}, query.Iterator{
		Next: func() (query.Result, bool) {
			r, ok := inner.NextSync()
			if !ok {
				return r, false
			}
			if r.Error == nil {
				var k ds.Key
				k, r.Value, r.Error = s.open(ds.RawKey(r.Key), r.Value)
				r.Key, r.Size = k.String(), len(r.Value)
				if q.KeysOnly {
					r.Value = nil
				}
			}
			if r.Error != nil {
				r.Entry = query.Entry{}
			}
			return r, true
		},
		Close: inner.Close,
	})
	rest := q
	rest.Prefix = ""
	return query.ResultsReplaceQuery(query.NaiveQueryApply(rest, decrypted), q), nil
}

// Batch implements ds.Batching. Commit writes the batch and fsyncs once.
func (s *Store) Batch(ctx context.Context) (ds.Batch, error) { return s.BatchSized(ctx, 0, 0) }

// BatchSized is Batch for about n writes whose keys and values come to
// size bytes in all. On the embedded pebble the batch is allocated at its
// size once, instead of doubling as it grows, and values are sealed in
// place in it.
func (s *Store) BatchSized(ctx context.Context, n, size int) (ds.Batch, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.life.RUnlock()
	if s.db != nil {
		return &batch{s: s, pb: s.db.NewBatchWithSize(size + n*batchOverhead)}, nil
	}
	b, err := s.backend.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return &batch{s: s, b: b}, nil
}

// batchOverhead bounds what a write adds to its key and value in a batch
// (keys of up to eight components): the hashed name, 27 bytes a
// component; the key's length, nonce and tag in the sealed value; pebble's
// record header.
const batchOverhead = 8*27 + binary.MaxVarintLen64 + chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead + 16

// batch writes to the embedded pebble's batch pb directly (the stored
// names as the pebble datastore would write them: the key's bytes), or
// else through the backend's batch b.
type batch struct {
	s       *Store
	pb      *pebble.Batch
	b       ds.Batch
	deleted []string // stored names, purged once committed
	done    bool     // committed
}

// errCommitted: a batch is written once.
var errCommitted = errors.New("store: batch already committed")

func (b *batch) Put(ctx context.Context, k ds.Key, value []byte) error {
	if b.done {
		return errCommitted
	}
	stored, err := b.s.hashKey(k)
	if err != nil {
		return err
	}
	if b.pb == nil {
		sealed, err := b.s.seal(k, stored, value)
		if err != nil {
			return err
		}
		return b.b.Put(ctx, stored, sealed)
	}
	name := stored.String()
	op := b.pb.SetDeferred(len(name), sealedLen(k, value))
	copy(op.Key, name)
	if err := b.s.sealInto(op.Value, k, stored, value); err != nil {
		return err
	}
	return op.Finish()
}

func (b *batch) Delete(ctx context.Context, k ds.Key) error {
	if b.done {
		return errCommitted
	}
	stored, err := b.s.hashKey(k)
	if err != nil {
		return err
	}
	if b.pb != nil {
		if err := b.pb.Delete(stored.Bytes(), nil); err != nil {
			return err
		}
		b.deleted = append(b.deleted, stored.String())
		return nil
	}
	return b.b.Delete(ctx, stored)
}

func (b *batch) Commit(ctx context.Context) error {
	if b.done {
		return errCommitted
	}
	if err := b.s.enter(); err != nil {
		return err
	}
	defer b.s.life.RUnlock()
	if b.pb != nil {
		// One write and one fsync of the write-ahead log.
		if err := b.pb.Commit(pebble.Sync); err != nil {
			return err
		}
		b.pb.Close()
		b.done = true
		b.s.markDeleted(b.deleted...)
		b.deleted = nil
		return nil
	}
	if err := b.b.Commit(ctx); err != nil {
		return err
	}
	b.done = true
	return b.s.backend.Sync(ctx, ds.NewKey("/"))
}

// Close purges what was deleted since the last purge (embedded pebble)
// and closes the backend if Open created it. Safe to call twice.
func (s *Store) Close() error {
	s.shutdown(true)
	return s.closeErr
}

// shutdown stops the purger, purges what is pending if asked, and closes
// the backend if Open created it; once.
func (s *Store) shutdown(purge bool) {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		s.purgeMu.Lock()
		defer s.purgeMu.Unlock()
		if s.owned && purge {
			s.closeErr = s.purgeLocked(context.Background())
		}
		s.closed = true
		s.life.Lock()
		if s.gone == nil {
			s.gone = ErrClosed
		}
		s.life.Unlock()
		if s.owned {
			s.closeErr = errors.Join(s.closeErr, s.backend.Close())
		}
	})
}

// Wipe destroys the store: the wrapped data key is overwritten with random
// bytes, fsynced and unlinked; the keys are dropped from memory; the backend
// is closed and the embedded database removed. Whatever copies of the
// ciphertext remain can never be decrypted.
func (s *Store) Wipe() error {
	s.mu.Lock()
	s.aead = nil
	s.macs.New = func() any { return nil }
	s.parents.Clear()
	s.mu.Unlock()
	s.life.Lock()
	s.gone = ErrWiped
	s.life.Unlock()
	path := filepath.Join(s.dir, KeyFile)
	err := shred(path)
	s.shutdown(false)
	if err == nil {
		err = s.closeErr
	}
	if s.owned {
		if rerr := os.RemoveAll(filepath.Join(s.dir, DataDir)); err == nil {
			err = rerr
		}
	}
	if err != nil {
		return fmt.Errorf("wipe store %s: %w", s.dir, err)
	}
	return nil
}

var _ ds.Batching = (*Store)(nil)
