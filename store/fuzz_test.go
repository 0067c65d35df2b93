package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/fxamacker/cbor/v2"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/medmesh/medmesh/keywrap"
)

// fixedStore is a store whose data key is all 7s, so sealed seeds are
// reproducible.
func fixedStore(t testing.TB) *Store {
	s := &Store{stop: make(chan struct{}), kick: make(chan struct{}, 1), dirty: map[string]struct{}{}}
	if err := s.setKeys(bytes.Repeat([]byte{7}, 32)); err != nil {
		t.Fatal(err)
	}
	return s
}

// FuzzOpenSealed feeds the value decoder (nonce, AEAD, length-prefixed
// original key, value) bytes as they might be found on disk under a
// stored name: it never panics, and whatever it accepts re-seals and
// opens to the same key and value.
func FuzzOpenSealed(f *testing.F) {
	s := fixedStore(f)
	k := ds.NewKey("/conv/c1/plain/op1")
	stored, _ := s.hashKey(k)
	good, _ := s.seal(k, stored, []byte("bed 4"))
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(good[:24])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, sealed []byte) {
		orig, v, err := s.open(stored, sealed)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("not ErrCorrupt: %v", err)
			}
			return
		}
		again, err := s.seal(orig, stored, v)
		if err != nil {
			t.Fatal(err)
		}
		orig2, v2, err := s.open(stored, again)
		if err != nil || !orig2.Equal(orig) || !bytes.Equal(v2, v) {
			t.Fatalf("re-sealed value opens to %s %q, %v", orig2, v2, err)
		}
	})
}

// FuzzSealRoundTrip: any key and value seal and open back, bound to
// their stored name.
func FuzzSealRoundTrip(f *testing.F) {
	s := fixedStore(f)
	f.Add("/conv/c1/plain/op1", []byte("bed 4"))
	f.Add("/", []byte{})
	f.Add("/a/b/c", bytes.Repeat([]byte{0}, 300))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		k := ds.NewKey(key)
		stored, err := s.hashKey(k)
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := s.seal(k, stored, value)
		if err != nil {
			t.Fatal(err)
		}
		orig, v, err := s.open(stored, sealed)
		if err != nil || !orig.Equal(k) || !bytes.Equal(v, value) {
			t.Fatalf("round trip of %q: %s %q %v", key, orig, v, err)
		}
		other, _ := s.hashKey(k.ChildString("x"))
		if _, _, err := s.open(other, sealed); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("value opened under another name: %v", err)
		}
	})
}

// FuzzKeyFile feeds Open a key file as it might be found on disk: it never
// panics; a file it accepts (only a real sealed data key can be) gives a
// working store. Files asking for argon2id costs beyond the test's are
// skipped (the cost limits are keywrap's, tested there).
func FuzzKeyFile(f *testing.F) {
	fast := keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}
	good, err := keywrap.Seal(pass, bytes.Repeat([]byte{7}, 32), keyLabel, fast)
	if err != nil {
		f.Fatal(err)
	}
	short, _ := keywrap.Seal(pass, []byte{7}, keyLabel, fast)
	f.Add(good)
	f.Add(short) // a sealed secret that is not a data key
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var params struct {
			Time      uint64 `cbor:"2,keyasint"`
			MemoryKiB uint64 `cbor:"3,keyasint"`
		}
		if cbor.Unmarshal(data, &params) == nil && (params.Time > 1 || params.MemoryKiB > 64) {
			t.Skip("argon2id cost beyond the fuzz budget")
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, KeyFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, pass, WithBackend(dssync.MutexWrap(ds.NewMapDatastore())))
		if err != nil {
			return
		}
		defer s.Close()
		ctx := t.Context()
		if err := s.Put(ctx, ds.NewKey("/k"), []byte("v")); err != nil {
			t.Fatal(err)
		}
		if v, err := s.Get(ctx, ds.NewKey("/k")); err != nil || string(v) != "v" {
			t.Fatalf("store over an accepted key file: %q %v", v, err)
		}
	})
}

// TestWriteFuzzSeeds writes the seed corpora under testdata/fuzz when
// MEDMESH_WRITE_SEEDS is set (the seeds are checked in).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("MEDMESH_WRITE_SEEDS") == "" {
		t.Skip("set MEDMESH_WRITE_SEEDS=1 to rewrite the checked-in seeds")
	}
	s := fixedStore(t)
	k := ds.NewKey("/conv/c1/plain/op1")
	stored, _ := s.hashKey(k)
	good, _ := s.seal(k, stored, []byte("bed 4"))
	long := bytes.Clone(good) // a length prefix past the end, properly sealed
	plain := append([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, "x"...)
	long = s.aead.Seal(long[:24], long[:24], plain, stored.Bytes())
	fast := keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}
	key, _ := keywrap.Seal(pass, bytes.Repeat([]byte{7}, 32), keyLabel, fast)
	costly, _ := keywrap.Seal(pass, bytes.Repeat([]byte{7}, 32), keyLabel, keywrap.Params{Time: 16, MemoryKiB: 4096, Threads: 1})
	wrongLabel, _ := keywrap.Seal(pass, bytes.Repeat([]byte{7}, 32), "medmesh device key", fast)
	seeds := map[string]map[string][]byte{
		"FuzzOpenSealed": {"valid": good, "length-past-end": long, "nonce-only": good[:24], "flipped-tag": flip(good)},
		"FuzzKeyFile":    {"valid": key, "costly-params": costly, "other-label": wrongLabel, "truncated": key[:len(key)-3]},
	}
	for name, files := range seeds {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for file, b := range files {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(dir, file), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func flip(b []byte) []byte {
	c := bytes.Clone(b)
	c[len(c)-1] ^= 1
	return c
}
