package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/medmesh/medmesh/keywrap"
)

var fastKDF = WithKDF(keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1})

var pass = []byte("device passphrase")

// backends opens the store over each backend the conformance suite covers.
func backends(t *testing.T) map[string]func(t *testing.T) *Store {
	return map[string]func(t *testing.T) *Store{
		"pebble": func(t *testing.T) *Store {
			s, err := Open(t.TempDir(), pass, fastKDF)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"memory": func(t *testing.T) *Store {
			s, err := Open(t.TempDir(), pass, fastKDF, WithBackend(dssync.MutexWrap(ds.NewMapDatastore())))
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
}

// TestConformance is the shared suite every backend passes.
func TestConformance(t *testing.T) {
	ctx := context.Background()
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			if _, err := s.Get(ctx, ds.NewKey("/none")); !errors.Is(err, ds.ErrNotFound) {
				t.Fatalf("missing key: %v", err)
			}
			put := map[string]string{"/conv/a/op/1": "one", "/conv/a/op/2": "two", "/conv/b/op/1": "other", "/conva/x": "near miss"}
			for k, v := range put {
				if err := s.Put(ctx, ds.NewKey(k), []byte(v)); err != nil {
					t.Fatal(err)
				}
			}
			for k, v := range put {
				got, err := s.Get(ctx, ds.NewKey(k))
				if err != nil || string(got) != v {
					t.Fatalf("Get(%s) = %q, %v", k, got, err)
				}
				if n, err := s.GetSize(ctx, ds.NewKey(k)); err != nil || n != len(v) {
					t.Fatalf("GetSize(%s) = %d, %v", k, n, err)
				}
			}
			res, err := s.Query(ctx, query.Query{Prefix: "/conv/a", Orders: []query.Order{query.OrderByKey{}}})
			if err != nil {
				t.Fatal(err)
			}
			all, err := res.Rest()
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 2 || all[0].Key != "/conv/a/op/1" || string(all[1].Value) != "two" {
				t.Fatalf("prefix query = %+v", all)
			}
			res, _ = s.Query(ctx, query.Query{Prefix: "/conv", KeysOnly: true, Limit: 2, Orders: []query.Order{query.OrderByKey{}}})
			keys, _ := res.Rest()
			if len(keys) != 2 || keys[0].Value != nil {
				t.Fatalf("keys-only limited query = %+v", keys)
			}
			b, err := s.Batch(ctx)
			if err != nil {
				t.Fatal(err)
			}
			b.Put(ctx, ds.NewKey("/conv/a/op/3"), []byte("three"))
			b.Delete(ctx, ds.NewKey("/conv/a/op/1"))
			if has, _ := s.Has(ctx, ds.NewKey("/conv/a/op/3")); has {
				t.Fatal("batch visible before commit")
			}
			if err := b.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if has, _ := s.Has(ctx, ds.NewKey("/conv/a/op/3")); !has {
				t.Fatal("batched put missing")
			}
			if has, _ := s.Has(ctx, ds.NewKey("/conv/a/op/1")); has {
				t.Fatal("batched delete ignored")
			}
			if err := s.Delete(ctx, ds.NewKey("/conv/a/op/2")); err != nil {
				t.Fatal(err)
			}
			res, _ = s.Query(ctx, query.Query{Prefix: "/"})
			rest, _ := res.Rest()
			if len(rest) != 3 {
				t.Fatalf("all = %d entries, want 3", len(rest))
			}
		})
	}
}

// TestValuesBoundToNames: a value moved to another key is refused.
func TestValuesBoundToNames(t *testing.T) {
	ctx := context.Background()
	mem := dssync.MutexWrap(ds.NewMapDatastore())
	s, err := Open(t.TempDir(), pass, fastKDF, WithBackend(mem))
	if err != nil {
		t.Fatal(err)
	}
	s.Put(ctx, ds.NewKey("/a"), []byte("for a"))
	s.Put(ctx, ds.NewKey("/b"), []byte("for b"))
	ha, _ := s.hashKey(ds.NewKey("/a"))
	hb, _ := s.hashKey(ds.NewKey("/b"))
	va, _ := mem.Get(ctx, ha)
	mem.Put(ctx, hb, va)
	if _, err := s.Get(ctx, ds.NewKey("/b")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("swapped value: %v", err)
	}
	flipped := bytes.Clone(va)
	flipped[len(flipped)-1] ^= 1
	mem.Put(ctx, ha, flipped)
	if _, err := s.Get(ctx, ds.NewKey("/a")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("tampered value: %v", err)
	}
}

// TestNoPlaintextOnDisk writes a marker as key and value and then searches
// every file under the directory for it.
func TestNoPlaintextOnDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, pass, fastKDF)
	if err != nil {
		t.Fatal(err)
	}
	const marker = "PATIENT-MARKER-7f3a9c"
	for i := range 200 {
		if err := s.Put(ctx, ds.NewKey(fmt.Sprintf("/%s/%d", marker, i)), []byte(marker+" value")); err != nil {
			t.Fatal(err)
		}
	}
	s.Sync(ctx, ds.NewKey("/"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(marker)) || bytes.Contains(b, []byte("PATIENT")) {
			t.Errorf("plaintext marker found in %s", p)
		}
		return nil
	})
}

func TestWrongPassphraseAndReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, pass, fastKDF)
	if err != nil {
		t.Fatal(err)
	}
	s.Put(ctx, ds.NewKey("/k"), []byte("v"))
	s.Close()
	if _, err := Open(dir, []byte("wrong"), fastKDF); !errors.Is(err, keywrap.ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	s, err = Open(dir, pass, fastKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.Get(ctx, ds.NewKey("/k")); err != nil || string(v) != "v" {
		t.Fatalf("after reopen: %q %v", v, err)
	}
}

func TestWipe(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, pass, fastKDF)
	if err != nil {
		t.Fatal(err)
	}
	s.Put(ctx, ds.NewKey("/k"), []byte("v"))
	if err := s.Wipe(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("key file still there: %v", err)
	}
	if _, err := s.Get(ctx, ds.NewKey("/k")); !errors.Is(err, ErrWiped) {
		t.Fatalf("get after wipe: %v", err)
	}
	// Ciphertext left elsewhere (a backup of data/) without the key: refused.
	s2, err := Open(dir, pass, fastKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if has, _ := s2.Has(ctx, ds.NewKey("/k")); has {
		t.Fatal("wiped data readable after reopen")
	}
}

func TestOrphanDataRefused(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir, pass, fastKDF)
	s.Put(context.Background(), ds.NewKey("/k"), []byte("v"))
	s.Close()
	os.Remove(filepath.Join(dir, KeyFile))
	if _, err := Open(dir, pass, fastKDF); !errors.Is(err, ErrOrphan) {
		t.Fatalf("data without key: %v", err)
	}
}

// TestKillMidBatch runs a writer in a child process, kills it with SIGKILL
// while it commits batches, reopens the store and checks that every batch the
// writer acknowledged is there, whole.
func TestKillMidBatch(t *testing.T) {
	if os.Getenv("MEDMESH_STORE_WRITER") != "" {
		writer()
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillMidBatch$")
	cmd.Env = append(os.Environ(), "MEDMESH_STORE_WRITER="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := -1
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if n, err := strconv.Atoi(sc.Text()); err == nil {
			acked = n
		}
		if acked >= 20 {
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if acked < 20 {
		t.Fatalf("writer acknowledged only %d batches", acked)
	}
	s, err := Open(dir, pass, fastKDF)
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	ctx := context.Background()
	for b := 0; b <= acked; b++ {
		for i := range 50 {
			v, err := s.Get(ctx, ds.NewKey(fmt.Sprintf("/batch/%d/%d", b, i)))
			if err != nil || len(v) != 1024 {
				t.Fatalf("acknowledged batch %d item %d: %v", b, i, err)
			}
		}
	}
	// A batch is all or nothing: any later batch is either whole or absent.
	res, _ := s.Query(ctx, query.Query{Prefix: "/batch", KeysOnly: true})
	counts := map[string]int{}
	for r := range res.Next() {
		if r.Error != nil {
			t.Fatal(r.Error)
		}
		counts[ds.NewKey(r.Key).Parent().String()]++
	}
	for k, n := range counts {
		if n != 50 {
			t.Fatalf("torn batch %s: %d of 50 items", k, n)
		}
	}
}

func writer() {
	dir := os.Getenv("MEDMESH_STORE_WRITER")
	s, err := Open(dir, pass, fastKDF)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	ctx := context.Background()
	val := bytes.Repeat([]byte{7}, 1024)
	deadline := time.Now().Add(time.Minute)
	for b := 0; time.Now().Before(deadline); b++ {
		bt, _ := s.Batch(ctx)
		for i := range 50 {
			bt.Put(ctx, ds.NewKey(fmt.Sprintf("/batch/%d/%d", b, i)), val)
		}
		if err := bt.Commit(ctx); err != nil {
			fmt.Println("commit:", err)
			os.Exit(1)
		}
		fmt.Println(b)
	}
	os.Exit(0)
}

// TestParentCacheConsistent: names computed through the parent cache equal
// names computed from scratch, so prefix queries match stored keys.
func TestParentCacheConsistent(t *testing.T) {
	s, err := Open(t.TempDir(), pass, fastKDF, WithBackend(dssync.MutexWrap(ds.NewMapDatastore())))
	if err != nil {
		t.Fatal(err)
	}
	h := s.macs.Get().(interface {
		Reset()
		Write([]byte) (int, error)
		Sum([]byte) []byte
		Size() int
		BlockSize() int
	})
	for _, k := range []string{"/a", "/a/b", "/a/b/c", "/x/y/z/w", "/a/b/d"} {
		for range 2 { // second round hits the cache
			got, _ := s.hashKey(ds.NewKey(k))
			if want := hashWith(h, ds.NewKey(k), ds.Key{}); got != want {
				t.Fatalf("hashKey(%s) = %s, want %s", k, got, want)
			}
		}
	}
}

// A batch sized for its writes, on the embedded pebble (sealed in place in
// pebble's batch) and on another backend, stores what Batch stores; a
// committed batch takes no more writes.
func TestBatchSized(t *testing.T) {
	ctx := context.Background()
	for name, opts := range map[string][]Option{"pebble": {fastKDF}, "map": {fastKDF, WithBackend(dssync.MutexWrap(ds.NewMapDatastore()))}} {
		t.Run(name, func(t *testing.T) {
			s, err := Open(t.TempDir(), pass, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.Put(ctx, ds.NewKey("/c/old"), []byte("old"))
			for _, size := range [][2]int{{0, 0}, {3, 10}, {3, 1 << 20}} {
				b, err := s.BatchSized(ctx, size[0], size[1])
				if err != nil {
					t.Fatal(err)
				}
				long := bytes.Repeat([]byte("v"), 3000) // beyond the hint
				for i, v := range [][]byte{[]byte("a"), {}, long} {
					if err := b.Put(ctx, ds.NewKey(fmt.Sprintf("/c/%d/%d", size[1], i)), v); err != nil {
						t.Fatal(err)
					}
				}
				b.Delete(ctx, ds.NewKey("/c/old"))
				if err := b.Commit(ctx); err != nil {
					t.Fatal(err)
				}
				for i, v := range [][]byte{[]byte("a"), {}, long} {
					got, err := s.Get(ctx, ds.NewKey(fmt.Sprintf("/c/%d/%d", size[1], i)))
					if err != nil || !bytes.Equal(got, v) {
						t.Fatalf("hint %v, value %d: %q, %v", size, i, got, err)
					}
				}
				if has, _ := s.Has(ctx, ds.NewKey("/c/old")); has {
					t.Fatal("batched delete ignored")
				}
				if b.Put(ctx, ds.NewKey("/c/late"), nil) == nil || b.Delete(ctx, ds.NewKey("/c/0/0")) == nil || b.Commit(ctx) == nil {
					t.Fatal("committed batch took more")
				}
			}
		})
	}
}

// A key under a remembered parent is named as the full chained hash
// names it, for every shape of last component.
func TestChildNameMatchesChain(t *testing.T) {
	s, err := Open(t.TempDir(), pass, fastKDF, WithBackend(dssync.MutexWrap(ds.NewMapDatastore())))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, k := range []string{"/conv/a/op/1", "/conv/a/op/2", "/conv/a/op/é-ü", "/conv/a/op/" + strings.Repeat("x", 300), "/conv/b/op/1", "/conv/a/op/1/deeper"} {
		for range 2 { // once to remember the parent, once through it
			got, err := s.hashKey(ds.NewKey(k))
			if err != nil {
				t.Fatal(err)
			}
			h := s.macs.Get().(hash.Hash)
			want := hashWith(h, ds.NewKey(k), ds.Key{})
			s.macs.Put(h)
			if got != want {
				t.Fatalf("%s: %s, full chain %s", k, got, want)
			}
		}
	}
	p := hashedParent{name: "/AAAAAAAAAAAAAAAAAAAAAAAAAA"}
	for _, comp := range []string{"", ".", ".."} {
		h := s.macs.Get().(hash.Hash)
		if got, want := childName(h, p, comp), hashWith(h, ds.NewKey(comp), ds.RawKey(p.name)); got != want {
			t.Fatalf("component %q: %s, want %s", comp, got, want)
		}
		s.macs.Put(h)
	}
}
