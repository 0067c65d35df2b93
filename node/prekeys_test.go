package node

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/keywrap"
	"github.com/medmesh/medmesh/store"
)

// welcomeTo seals a welcome from a stranger to rc and returns what opening
// it with ring gives.
func welcomeTo(t *testing.T, rc e2e.Recipient) func(ring *e2e.PrekeyRing) error {
	t.Helper()
	sender := peer.ID("sender")
	conv := []byte("conversation")
	e := e2e.New(e2e.Tag(conv, sender), sender, nil)
	if err := e2e.SealWelcome(e, e2e.NewSecret(), e2e.EpochKeys{Conv: conv, Creator: []byte(sender)}, []peer.ID{sender, rc.ID}, []e2e.Recipient{rc}); err != nil {
		t.Fatal(err)
	}
	w, err := e2e.DecodeWelcome(e.Body)
	if err != nil {
		t.Fatal(err)
	}
	return func(ring *e2e.PrekeyRing) error {
		_, _, err := e2e.OpenWelcome(e, w, rc.ID, ring, nil)
		return err
	}
}

// TestExpirePrekeys: a retired prekey's private half past its window is
// deleted from the store as well as from memory — by ExpirePrekeys, also
// when chat expired the shared ring in memory only, and by the node's own
// rotation — so it is gone after a restart.
func TestExpirePrekeys(t *testing.T) {
	c := newCA(t, "General Hospital")
	t0 := time.Now()
	// Each case expires prekey 1 (retired at t1) and returns when.
	cases := []struct {
		name   string
		expire func(t *testing.T, n *Node, t1 time.Time) time.Time
	}{
		{"ExpirePrekeys", func(t *testing.T, n *Node, t1 time.Time) time.Time {
			at := t1.Add(e2e.PrekeyWindow + time.Hour)
			if got, err := n.ExpirePrekeys(at); got != 1 || err != nil {
				t.Fatalf("ExpirePrekeys: %d, %v; want 1 dropped", got, err)
			}
			return at
		}},
		{"after chat expired the ring in memory", func(t *testing.T, n *Node, t1 time.Time) time.Time {
			at := t1.Add(e2e.PrekeyWindow + time.Hour)
			n.Prekeys().Expire(at) // as chat's Replica.Expire does
			if got, err := n.ExpirePrekeys(at); got != 1 || err != nil {
				t.Fatalf("ExpirePrekeys: %d, %v; want 1 dropped from the store", got, err)
			}
			return at
		}},
		{"the node's own check, no rotation due", func(t *testing.T, n *Node, t1 time.Time) time.Time {
			p3, err := n.Recipient(n.ID(), t1.Add(e2e.PrekeyRotation+time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			// Prekey 1 is past its window, prekey 3 not yet due to rotate.
			at := t1.Add(e2e.PrekeyWindow + 30*time.Minute)
			if p, err := n.Recipient(n.ID(), at); err != nil || p.PrekeyID != p3.PrekeyID {
				t.Fatalf("rotated (%v): the case needs a check without rotation", err)
			}
			return at
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mem := dssync.MutexWrap(ds.NewMapDatastore())
			d := c.enrol(t, "one", t0)
			n := startNode(t, c, d, withStore(mem))
			p1, err := n.Recipient(n.ID(), t0)
			if err != nil {
				t.Fatal(err)
			}
			open1 := welcomeTo(t, p1)
			t1 := t0.Add(e2e.PrekeyRotation + time.Hour)
			p2, err := n.Recipient(n.ID(), t1)
			if err != nil || p2.PrekeyID == p1.PrekeyID {
				t.Fatalf("rotation: %v", err)
			}
			open2 := welcomeTo(t, p2)
			if err := open1(n.Prekeys()); err != nil {
				t.Fatalf("retired prekey inside its window: %v", err)
			}
			if got, err := n.ExpirePrekeys(t1); got != 0 || err != nil {
				t.Fatalf("nothing past its window: %d, %v", got, err)
			}

			t2 := tc.expire(t, n, t1)
			if err := open1(n.Prekeys()); !errors.Is(err, e2e.ErrPrekeyGone) {
				t.Fatalf("expired prekey still opens: %v", err)
			}
			if got, err := n.ExpirePrekeys(t2); got != 0 || err != nil {
				t.Fatalf("second expiry: %d, %v", got, err)
			}

			n.Close()
			again := startNode(t, c, d, withStore(mem))
			if err := open1(again.Prekeys()); !errors.Is(err, e2e.ErrPrekeyGone) {
				t.Fatalf("expired prekey back after a restart: %v", err)
			}
			if err := open2(again.Prekeys()); err != nil {
				t.Fatalf("prekey inside its window lost in a restart: %v", err)
			}
		})
	}
}

// onDisk reports whether any file under dir holds the sealed value (whole,
// its nonce, or a window of its ciphertext).
func onDisk(t *testing.T, dir string, sealed []byte) bool {
	t.Helper()
	hit := false
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || hit {
			return err
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		for _, n := range [][]byte{sealed, sealed[:24], sealed[40:72]} {
			hit = hit || bytes.Contains(b, n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return hit
}

// TestExpiredPrekeyLeavesDisk: once a retired prekey passes its window,
// ExpirePrekeys saves the ring without its private half and the store's
// purge removes every earlier copy of the ring that held it from the
// disk: an attacker who later takes the phone and the passphrase finds
// no ring that opens the welcomes sealed to it.
func TestExpiredPrekeyLeavesDisk(t *testing.T) {
	ctx := context.Background()
	c := newCA(t, "General Hospital")
	t0 := time.Now()
	dir := t.TempDir()
	st, err := store.Open(dir, []byte("pass"), store.WithKDF(keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}), store.WithPurgeDelay(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := startNode(t, c, c.enrol(t, "one", t0), withStore(st))
	p1, err := n.Recipient(n.ID(), t0)
	if err != nil {
		t.Fatal(err)
	}
	open1 := welcomeTo(t, p1)
	ring1, err := st.Sealed(ctx, prekeyKey) // prekey 1 alone
	if err != nil {
		t.Fatal(err)
	}
	t1 := t0.Add(e2e.PrekeyRotation + time.Hour)
	if _, err := n.Recipient(n.ID(), t1); err != nil {
		t.Fatal(err)
	}
	ring12, _ := st.Sealed(ctx, prekeyKey) // prekey 1 retired, prekey 2
	if err := st.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if !onDisk(t, dir, ring12) {
		t.Fatal("the stored ring is not on disk: the scan proves nothing")
	}

	if got, err := n.ExpirePrekeys(t1.Add(e2e.PrekeyWindow + time.Hour)); got != 1 || err != nil {
		t.Fatalf("ExpirePrekeys: %d, %v; want 1 dropped", got, err)
	}
	if err := open1(n.Prekeys()); !errors.Is(err, e2e.ErrPrekeyGone) {
		t.Fatalf("expired prekey still opens: %v", err)
	}
	ring2, _ := st.Sealed(ctx, prekeyKey)
	if err := st.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	for name, old := range map[string][]byte{"prekey 1 alone": ring1, "prekeys 1 and 2": ring12} {
		if onDisk(t, dir, old) {
			t.Errorf("an earlier ring holding the expired private half (%s) is still on disk", name)
		}
	}
	if !onDisk(t, dir, ring2) {
		t.Error("the current ring is not on disk")
	}
}

// TestDestroyPrekeys: after DestroyPrekeys (own certificate revoked) the
// ring is gone from the store, and neither a rotation nor an expiry pass
// racing the shutdown writes it back.
func TestDestroyPrekeys(t *testing.T) {
	ctx := context.Background()
	c := newCA(t, "General Hospital")
	t0 := time.Now()
	mem := dssync.MutexWrap(ds.NewMapDatastore())
	n := startNode(t, c, c.enrol(t, "one", t0), withStore(mem))
	if has, _ := mem.Has(ctx, prekeyKey); !has {
		t.Fatal("no ring stored at start")
	}
	if err := n.DestroyPrekeys(); err != nil {
		t.Fatal(err)
	}
	t1 := t0.Add(e2e.PrekeyRotation + time.Hour)
	n.Recipient(n.ID(), t1) // rotates
	n.ExpirePrekeys(t1.Add(e2e.PrekeyWindow + time.Hour))
	if has, _ := mem.Has(ctx, prekeyKey); has {
		t.Fatal("the prekey ring is back in the store after DestroyPrekeys")
	}
}
