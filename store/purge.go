package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// DefaultPurgeDelay is how long after a delete the store purges it from
// disk: deletes within the delay share one purge.
const DefaultPurgeDelay = 10 * time.Second

// maxDirty bounds the deleted names a store remembers between purges;
// beyond it the next purge compacts the whole keyspace instead.
const maxDirty = 4096

// MemTableSize bounds one memtable of the embedded database. Pebble
// starts a memtable at 256 KiB and doubles it up to this size, and holds
// at most two (one being flushed): at most 32 MiB of memory, reached only
// while many ops are written (a catch-up sync), against pebble's default
// 4 MiB — which flushes, and shreds a write-ahead log, every 4 MiB and
// compacts level 0 every four flushes while a device catches up.
const MemTableSize = 16 << 20

// l0CompactionThreshold is how many level-0 files start a compaction
// (pebble's default: 4). A catch-up of up to ≈ 30 MiB of values then
// flushes without compacting; Purge compacts deleted ranges regardless.
const l0CompactionThreshold = 8

// pebbleOptions are the embedded database's options: every file pebble
// discards (write-ahead logs, tables, manifests) is overwritten before it
// is unlinked, and write-ahead logs are never recycled (a recycled log
// keeps the old log's bytes past its new records).
func pebbleOptions() *pebble.Options {
	o := &pebble.Options{FS: shredFS{vfs.Default}, Cleaner: shredCleaner{},
		MemTableSize: MemTableSize, L0CompactionThreshold: l0CompactionThreshold}
	// Values are sealed and names are keyed hashes: nothing compresses,
	// so compressing blocks only costs CPU on every flush and compaction.
	o.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionNone })
	return o
}

// shredCleaner deletes obsolete files through the FS (shredFS.Remove).
// Its embedded ArchiveCleaner contributes only pebble's "needs file
// contents" marker, which turns write-ahead log recycling off; the
// shallower DeleteCleaner's Clean is the one called.
type shredCleaner struct {
	pebble.DeleteCleaner
	noRecycle
}

type noRecycle struct{ pebble.ArchiveCleaner }

// shredFS is the OS file system, except that a removed file is first
// overwritten and fsynced, and a file is never reused for writing.
type shredFS struct{ vfs.FS }

func (f shredFS) Remove(name string) error { return shred(name) }

func (f shredFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if err := shred(oldname); err != nil {
		return nil, err
	}
	return f.FS.Create(newname, c)
}

// shred overwrites the regular file at path with random bytes (a
// ChaCha8 keystream seeded from crypto/rand), fsyncs it
// and unlinks it. Anything else it just removes; a
// missing file is not an error.
func shred(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode().IsRegular() && st.Size() > 0 {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		// A ChaCha8 keystream under a fresh key from crypto/rand: random
		// bytes at 2.5× the speed of reading crypto/rand for each.
		var seed [32]byte
		rand.Read(seed[:])
		_, err = io.CopyN(f, mrand.NewChaCha8(seed), st.Size())
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	// The unlink needs no directory fsync: the bytes are overwritten and
	// synced already, so a crash that brings the name back brings back
	// noise (pebble ignores obsolete files it finds at open).
	return os.Remove(path)
}

// Shred overwrites, fsyncs and unlinks the file at path (a key file, a
// token): what the store does with its key file on Wipe. A missing file is
// not an error.
func Shred(path string) error {
	if err := shred(path); err != nil {
		return fmt.Errorf("shred %s: %w", filepath.Base(path), err)
	}
	return nil
}

// markDeleted records stored names whose old values the next purge must
// remove from disk, and wakes the purger.
func (s *Store) markDeleted(names ...string) {
	if s.db == nil || len(names) == 0 {
		return
	}
	s.pmu.Lock()
	if !s.dirtyAll {
		for _, n := range names {
			s.dirty[n] = struct{}{}
		}
		if len(s.dirty) > maxDirty {
			s.dirtyAll = true
			clear(s.dirty)
		}
	}
	s.pmu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// purgeLoop purges PurgeDelay after the first delete since the last purge,
// until stop is closed.
func (s *Store) purgeLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		}
		t := time.NewTimer(s.purgeDelay)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-t.C:
		}
		// Close runs the last purge itself; this one may finish first.
		if err := s.Purge(context.Background()); err != nil {
			s.log.Warn("purge deleted values", "err", err)
		}
	}
}

// Purge removes from disk the values deleted or overwritten (by a delete
// first: see the package comment) since the last purge: it flushes the
// memtable, which moves every write to a fresh write-ahead log; compacts
// the deleted names' range to the bottom level, where the deletes and
// the values they shadow are dropped; and waits until pebble has shredded
// the files that held them (old logs, old tables). The store runs it on
// its own PurgeDelay after a delete and at Close; callers run it when they
// need the guarantee now. Over a backend given with WithBackend it does
// nothing.
func (s *Store) Purge(ctx context.Context) error {
	if s.db == nil {
		return nil
	}
	s.purgeMu.Lock()
	defer s.purgeMu.Unlock()
	return s.purgeLocked(ctx)
}

// purgeLocked is Purge; the caller holds purgeMu.
func (s *Store) purgeLocked(ctx context.Context) error {
	if s.closed {
		return ErrClosed
	}
	s.pmu.Lock()
	names, all := s.dirty, s.dirtyAll
	s.dirty, s.dirtyAll = map[string]struct{}{}, false
	s.pmu.Unlock()
	if len(names) == 0 && !all {
		return nil
	}
	if err := s.purge(ctx, names, all); err != nil {
		s.pmu.Lock() // try again next time
		if all {
			s.dirtyAll = true
		}
		for n := range names {
			s.dirty[n] = struct{}{}
		}
		s.pmu.Unlock()
		return fmt.Errorf("purge store %s: %w", s.dir, err)
	}
	return nil
}

func (s *Store) purge(ctx context.Context, names map[string]struct{}, all bool) error {
	if err := s.db.Flush(); err != nil {
		return err
	}
	start, end := []byte{0}, []byte{0xff}
	if !all {
		// One range from the least to the greatest name: one manual
		// compaction, whose cost is the data in that range (hashed names
		// spread over the keyspace, so at worst the whole store).
		sorted := slices.Sorted(func(yield func(string) bool) {
			for n := range names {
				if !yield(n) {
					return
				}
			}
		})
		start, end = []byte(sorted[0]), append([]byte(sorted[len(sorted)-1]), 0)
	}
	if err := s.db.Compact(ctx, start, end, false); err != nil {
		return err
	}
	// The files the compaction made obsolete are shredded by pebble's
	// cleaner goroutine; wait for it (the method only waits on the jobs
	// queued so far, despite its name).
	s.db.TestOnlyWaitForCleaning()
	return nil
}
