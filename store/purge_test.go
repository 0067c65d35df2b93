package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"go.uber.org/goleak"

	"github.com/medmesh/medmesh/internal/check"
)

// found reports the files under dir that contain any of needles.
func found(t *testing.T, dir string, needles ...[]byte) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed since the listing
		}
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(b, n) {
				hits = append(hits, filepath.Base(p))
				break
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

// traces are what a scan looks for of a sealed value: the whole of it, its
// nonce and a window of its ciphertext (in case a table block splits or
// frames it).
func traces(sealed []byte) [][]byte {
	return [][]byte{sealed, sealed[:24], sealed[40:72]}
}

// TestDeletedValueLeavesDisk: a value deleted through the store's API (or
// overwritten after a delete, as node does with its prekey ring), after
// Purge, is in no file under the store directory — not in a write-ahead
// log (old ones are shredded, never recycled), not in a table (the range
// is compacted to the bottom level and obsolete tables shredded). Before
// the deletion both the value's plaintext marker is absent (it is sealed)
// and the sealed bytes are present, so the scan can see them.
func TestDeletedValueLeavesDisk(t *testing.T) {
	ctx := context.Background()
	const marker = "PATIENT-MARKER-deleted-5c1e"
	key := ds.NewKey("/conv/c1/plain/op42")
	cases := []struct {
		name   string
		where  func(t *testing.T, s *Store) // where the value sits when it is deleted
		delete func(t *testing.T, s *Store)
	}{
		{"Delete, value in the write-ahead log", func(*testing.T, *Store) {}, func(t *testing.T, s *Store) {
			if err := s.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		}},
		{"Delete, value in a table and an old log", flushTwice, func(t *testing.T, s *Store) {
			if err := s.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		}},
		{"batched delete, value in a table", flushTwice, func(t *testing.T, s *Store) {
			b, _ := s.Batch(ctx)
			b.Delete(ctx, key)
			b.Put(ctx, ds.NewKey("/conv/c1/keys"), []byte("key record"))
			if err := b.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}},
		{"overwrite after a delete in one batch", flushTwice, func(t *testing.T, s *Store) {
			b, _ := s.Batch(ctx)
			b.Delete(ctx, key)
			b.Put(ctx, key, []byte("the new value"))
			if err := b.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, pass, fastKDF, WithPurgeDelay(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			fill(t, s, 0, 500)
			if err := s.Put(ctx, key, []byte(marker+": bed 4, query sepsis")); err != nil {
				t.Fatal(err)
			}
			sealed, err := s.Sealed(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			fill(t, s, 500, 1000)
			if err := s.Sync(ctx, ds.NewKey("/")); err != nil {
				t.Fatal(err)
			}
			tc.where(t, s)
			if hits := found(t, dir, traces(sealed)...); len(hits) == 0 {
				t.Fatal("the sealed value is not on disk before the delete: the scan proves nothing")
			}
			tc.delete(t, s)
			if err := s.Purge(ctx); err != nil {
				t.Fatal(err)
			}
			if hits := found(t, dir, traces(sealed)...); len(hits) > 0 {
				t.Fatalf("deleted value still on disk after Purge, in %v", hits)
			}
			if hits := found(t, dir, []byte(marker), []byte("PATIENT")); len(hits) > 0 {
				t.Fatalf("plaintext on disk in %v", hits)
			}
			// The rest of the store is intact, after a reopen too.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, err = Open(dir, pass, fastKDF, WithPurgeDelay(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for _, i := range []int{0, 499, 500, 999} {
				if _, err := s.Get(ctx, fillKey(i)); err != nil {
					t.Fatalf("value %d lost in the purge: %v", i, err)
				}
			}
			if hits := found(t, dir, traces(sealed)...); len(hits) > 0 {
				t.Fatalf("deleted value on disk after a reopen, in %v", hits)
			}
		})
	}
}

// TestDeleteIsPurgedByTheStore: without any call to Purge the store
// purges a delete within its purge delay, and Close purges what is
// pending.
func TestDeleteIsPurgedByTheStore(t *testing.T) {
	ctx := context.Background()
	key := ds.NewKey("/conv/c1/plain/op7")
	for _, byClose := range []bool{false, true} {
		t.Run(fmt.Sprintf("by close %v", byClose), func(t *testing.T) {
			dir := t.TempDir()
			delay := 50 * time.Millisecond
			if byClose {
				delay = time.Hour
			}
			s, err := Open(dir, pass, fastKDF, WithPurgeDelay(delay))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			fill(t, s, 0, 200)
			s.Put(ctx, key, []byte("bed 9 allergy"))
			sealed, _ := s.Sealed(ctx, key)
			flushTwice(t, s)
			if err := s.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
			if byClose {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			check.Eventually(t, 10*time.Second, "the deleted value gone from disk", func() bool {
				return len(found(t, dir, traces(sealed)...)) == 0
			})
		})
	}
}

func fillKey(i int) ds.Key { return ds.NewKey(fmt.Sprintf("/conv/c1/op/%d", i)) }

// fill puts values [from, to) of 512 bytes.
func fill(t *testing.T, s *Store, from, to int) {
	t.Helper()
	b, _ := s.Batch(context.Background())
	for i := from; i < to; i++ {
		b.Put(context.Background(), fillKey(i), bytes.Repeat([]byte{byte(i)}, 512))
	}
	if err := b.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// flushTwice moves everything written so far into a table and rotates
// the write-ahead log twice: the old logs become obsolete (pebble's
// default would keep them for recycling).
func flushTwice(t *testing.T, s *Store) {
	t.Helper()
	for i := range 2 {
		if err := s.db.Flush(); err != nil {
			t.Fatal(err)
		}
		fill(t, s, 2000+i, 2001+i)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, check.LeakOptions()...) }

// TestPurgeAfterCloseOrWipe: a late Purge or Delete is an error, not a
// panic of the closed database, and the purger is gone (goleak).
func TestPurgeAfterCloseOrWipe(t *testing.T) {
	ctx := context.Background()
	for _, wipe := range []bool{false, true} {
		s, err := Open(t.TempDir(), pass, fastKDF)
		if err != nil {
			t.Fatal(err)
		}
		s.Put(ctx, ds.NewKey("/a"), []byte("v"))
		s.Delete(ctx, ds.NewKey("/a"))
		if wipe {
			err = s.Wipe()
		} else {
			err = s.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Purge(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("purge after close (wipe %v): %v", wipe, err)
		}
		want := ErrClosed
		if wipe {
			want = ErrWiped
		}
		if _, err := s.Get(ctx, ds.NewKey("/a")); !errors.Is(err, want) {
			t.Fatalf("get after close (wipe %v): %v", wipe, err)
		}
		if _, err := s.Batch(ctx); !errors.Is(err, want) {
			t.Fatalf("batch after close (wipe %v): %v", wipe, err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
	}
}

// TestWipeUnderLoad: writers, readers and batches racing a Wipe (a CRL
// arriving while the device works) get ErrWiped, never a panic of the
// closed database, and nothing is readable after.
func TestWipeUnderLoad(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, pass, fastKDF, WithPurgeDelay(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	fill(t, s, 0, 100)
	errs := make(chan error, 4)
	started := make(chan struct{}, 4)
	for w := range 4 {
		go func() {
			var err error
			for i := 0; err == nil; i++ {
				k := ds.NewKey(fmt.Sprintf("/w%d/%d", w, i))
				switch i % 4 {
				case 0:
					err = s.Put(ctx, k, []byte("v"))
				case 1:
					_, err = s.Get(ctx, fillKey(i%100))
				case 2:
					err = s.Delete(ctx, k)
				default:
					var b ds.Batch
					if b, err = s.Batch(ctx); err == nil {
						b.Put(ctx, k, []byte("v"))
						err = b.Commit(ctx)
					}
				}
				if i == 10 {
					started <- struct{}{}
				}
			}
			errs <- err
		}()
	}
	for range 4 {
		<-started
	}
	if err := s.Wipe(); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if err := <-errs; !errors.Is(err, ErrWiped) {
			t.Fatalf("a call racing Wipe: %v", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("key file after wipe: %v", err)
	}
}

// The embedded database's options: the deletion-at-rest settings hold
// beside the write-pattern ones (uncompressed blocks, a larger memtable).
func TestPebbleOptions(t *testing.T) {
	o := pebbleOptions()
	o.EnsureDefaults()
	if _, ok := o.FS.(shredFS); !ok {
		t.Errorf("FS is %T, want shredFS", o.FS)
	}
	if _, ok := o.Cleaner.(shredCleaner); !ok {
		t.Errorf("Cleaner is %T, want shredCleaner (which turns log recycling off)", o.Cleaner)
	}
	if o.MemTableSize != MemTableSize || o.L0CompactionThreshold != l0CompactionThreshold {
		t.Errorf("memtable %d, L0 threshold %d", o.MemTableSize, o.L0CompactionThreshold)
	}
	if o.MemTableStopWritesThreshold*int(o.MemTableSize) > 32<<20 {
		t.Errorf("memtables may hold %d MiB, more than the stated 32", o.MemTableStopWritesThreshold*int(o.MemTableSize)>>20)
	}
	for i, l := range o.Levels {
		if p := l.Compression(); p.Name != "NoCompression" {
			t.Errorf("level %d compresses with %s", i, p.Name)
		}
	}
}
