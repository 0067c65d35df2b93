package e2e

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// checkSkipped checks the bounds on skipped keys and that Skipped() counts
// exactly the keys held.
func checkSkipped(t testing.TB, r *RecvChains) {
	t.Helper()
	n := 0
	for k, c := range r.chains {
		if len(c.skipped) > MaxSkippedChain {
			t.Fatalf("chain of %s holds %d skipped keys, limit %d", k.sender, len(c.skipped), MaxSkippedChain)
		}
		n += len(c.skipped)
	}
	if r.Skipped() != n {
		t.Fatalf("Skipped() is %d, %d keys held", r.Skipped(), n)
	}
	if n > MaxSkippedTotal {
		t.Fatalf("%d skipped keys held, limit %d", n, MaxSkippedTotal)
	}
}

func skippedOf(r *RecvChains, epoch EpochID, sender peer.ID) int {
	if c := r.chains[chainKey{epoch, sender}]; c != nil {
		return len(c.skipped)
	}
	return -1
}

// TestKeyStateBomb: a sender of the conversation (its signature is good)
// cannot make a receiver derive and hold keys with envelopes that do not
// authenticate, and an authentic sender skipping ahead over and over holds
// a bounded number of keys at every receiver, in memory and on disk.
func TestKeyStateBomb(t *testing.T) {
	conv := []byte("conv")
	alice := newDev(t)
	epoch, secret := testEpoch()
	recv := NewRecvChains()
	recv.Install(epoch, secret, []peer.ID{alice.id})
	state := func() []byte {
		t.Helper()
		b, err := recv.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	before := state()

	noise := make([]byte, 200)
	rand.Read(noise)
	send := &SendChain{Epoch: epoch, CK: ChainKey(secret, alice.id)}
	genuine := sealContent(t, alice, conv, send, "first") // index 0
	for _, index := range []uint32{0, 1, MaxSkip - 1, MaxSkip, MaxSkip + 1, 1 << 20, 1 << 31, math.MaxUint32 - 1, math.MaxUint32} {
		for _, body := range [][]byte{nil, noise[:10], noise[:40], noise, genuine.Body} {
			if index == 0 && bytes.Equal(body, genuine.Body) {
				continue // that is the genuine message
			}
			e := envelope(alice, conv)
			e.Kind, e.Epoch, e.Index, e.Body = KindContent, epoch[:], index, body
			e = signed(t, alice, e)
			if _, err := OpenContent(e, recv, t0); !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrKeyGone) {
				t.Fatalf("garbage at index %d: %v", index, err)
			}
			if recv.Skipped() != 0 || !bytes.Equal(state(), before) {
				t.Fatalf("garbage at index %d changed the chains (%d skipped keys)", index, recv.Skipped())
			}
		}
	}
	if pt, err := OpenContent(genuine, recv, t0); err != nil || string(pt) != "first" {
		t.Fatalf("genuine message after the garbage: %q %v", pt, err)
	}
	checkSkipped(t, recv)

	// An authentic sender jumping ahead again and again: its chain keeps
	// its MaxSkippedChain highest skipped keys.
	now := t0
	jump := func(d dev, c *SendChain) {
		t.Helper()
		now = now.Add(time.Second)
		c.SkipTo(c.Index + MaxSkip)
		if _, err := OpenContent(sealContent(t, d, conv, c, "jump"), recv, now); err != nil {
			t.Fatalf("jump to %d: %v", c.Index-1, err)
		}
		checkSkipped(t, recv)
	}
	first := *send // at index 1: its keys are the first skipped
	for range 5 {
		jump(alice, send)
	}
	if n := skippedOf(recv, epoch, alice.id); n != MaxSkippedChain {
		t.Fatalf("alice's chain holds %d skipped keys, want %d", n, MaxSkippedChain)
	}
	if _, err := OpenContent(sealContent(t, alice, conv, &first, "old"), recv, now); !errors.Is(err, ErrKeyGone) {
		t.Fatalf("lowest skipped key was not the one evicted: %v", err)
	}
	last := &SendChain{Epoch: epoch, CK: ChainKey(secret, alice.id)}
	last.SkipTo(send.Index - 2) // the newest skipped index
	if pt, err := OpenContent(sealContent(t, alice, conv, last, "late"), recv, now); err != nil || string(pt) != "late" {
		t.Fatalf("newest skipped key: %v", err)
	}
	checkSkipped(t, recv)

	// Several senders, in this epoch and another, push the total past
	// MaxSkippedTotal: the oldest keys anywhere go first.
	epoch2, secret2 := testEpoch()
	senders := []dev{newDev(t), newDev(t), newDev(t), newDev(t), newDev(t), newDev(t)}
	type sender struct {
		d     dev
		epoch EpochID
		c     *SendChain
	}
	var ss []sender
	for i, d := range senders {
		ep, s := epoch, secret
		if i%2 == 1 {
			ep, s = epoch2, secret2
		}
		recv.Install(ep, s, []peer.ID{d.id})
		ss = append(ss, sender{d, ep, &SendChain{Epoch: ep, CK: ChainKey(s, d.id)}})
	}
	for _, s := range ss {
		jump(s.d, s.c)
		jump(s.d, s.c)
	}
	if len(ss)*MaxSkippedChain <= MaxSkippedTotal {
		t.Fatal("the senders do not exceed MaxSkippedTotal: add some")
	}
	if recv.Skipped() != MaxSkippedTotal {
		t.Fatalf("%d skipped keys, want %d", recv.Skipped(), MaxSkippedTotal)
	}
	if n := skippedOf(recv, epoch, alice.id); n != 0 {
		t.Fatalf("alice's keys are the oldest, yet %d remain", n)
	}
	newest := ss[len(ss)-1]
	if n := skippedOf(recv, newest.epoch, newest.d.id); n != 2*MaxSkip {
		t.Fatalf("the newest sender keeps %d skipped keys, want %d", n, 2*MaxSkip)
	}

	// The bounded state survives the store.
	saved := state()
	back, err := UnmarshalRecvChains(saved)
	if err != nil {
		t.Fatal(err)
	}
	checkSkipped(t, back)
	if back.Skipped() != recv.Skipped() || !slices.Equal(back.Epochs(), recv.Epochs()) {
		t.Fatalf("restored %d skipped keys in %d epochs, want %d in %d", back.Skipped(), len(back.Epochs()), recv.Skipped(), len(recv.Epochs()))
	}
	if again, err := back.Marshal(); err != nil || !bytes.Equal(again, saved) {
		t.Fatalf("chains round trip changed the bytes: %v", err)
	}
	if pt, err := OpenContent(sealContent(t, newest.d, conv, newest.c, "after restore"), back, now); err != nil || string(pt) != "after restore" {
		t.Fatalf("restored chain: %v", err)
	}
}

// TestUnmarshalRecvChainsRejects: a corrupt or forged store cannot hand a
// device more key state than the bounds allow, nor records of the wrong
// shape.
func TestUnmarshalRecvChainsRejects(t *testing.T) {
	epoch, _ := testEpoch()
	mk := bytes.Repeat([]byte{1}, 32)
	chain := func(sender string, skipped int) chainRecord {
		rec := chainRecord{Epoch: epoch[:], Sender: []byte(sender), CK: mk, Next: uint32(skipped)}
		for i := range skipped {
			rec.Skipped = append(rec.Skipped, skippedRecord{Index: uint32(i), MK: mk, At: t0.Unix()})
		}
		return rec
	}
	enc := func(recs ...chainRecord) []byte {
		b, err := detcbor.Marshal(recs)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	full := func(n int) []chainRecord {
		var recs []chainRecord
		for i := range n {
			recs = append(recs, chain(fmt.Sprintf("sender %d", i), MaxSkippedChain))
		}
		return recs
	}
	fits := MaxSkippedTotal / MaxSkippedChain
	if r, err := UnmarshalRecvChains(enc(full(fits)...)); err != nil || r.Skipped() != fits*MaxSkippedChain {
		t.Fatalf("a store at the bounds: %v", err)
	}
	with := func(mut func(*chainRecord)) []byte {
		c := chain("a", 3)
		c.Skipped = slices.Clone(c.Skipped)
		mut(&c)
		return enc(c)
	}
	for name, in := range map[string][]byte{
		"too many keys in a chain": enc(chain("a", MaxSkippedChain+1)),
		"too many keys in all":     enc(append(full(fits), chain("last", 1))...),
		"duplicate chain":          enc(chain("a", 1), chain("a", 1)),
		"duplicate skipped index":  with(func(c *chainRecord) { c.Skipped[1].Index = 0 }),
		"skipped index not behind": with(func(c *chainRecord) { c.Skipped[2].Index = 3 }),
		"16-byte epoch":            with(func(c *chainRecord) { c.Epoch = epoch[:16] }),
		"short chain key":          with(func(c *chainRecord) { c.CK = mk[:31] }),
		"short message key":        with(func(c *chainRecord) { c.Skipped[0].MK = mk[:16] }),
		"no sender":                with(func(c *chainRecord) { c.Sender = nil }),
		"65-byte sender":           with(func(c *chainRecord) { c.Sender = bytes.Repeat([]byte{1}, 65) }),
		"not CBOR":                 []byte("chains"),
		"trailing byte":            append(enc(chain("a", 1)), 0),
	} {
		if _, err := UnmarshalRecvChains(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestWelcomeBinding: a welcome share opens only in the welcome it was
// sealed in, and every recipient gets the committed secret or an error.
func TestWelcomeBinding(t *testing.T) {
	alice, bob, carol, mallory, dave := newDev(t), newDev(t), newDev(t), newDev(t), newDev(t)
	conv := []byte("conversation-id-")
	tag := Tag(conv, alice.id)
	keys := EpochKeys{Conv: conv, Creator: []byte(alice.id)}
	holders := ids(alice, bob, carol, mallory)
	to := []Recipient{recipient(t, bob, false), recipient(t, carol, false), recipient(t, mallory, false)}
	dep, dep2 := [32]byte{1}, [32]byte{2}
	header := func(from dev, tag []byte, wall int64, deps ...[32]byte) *Envelope {
		e := New(tag, from.id, deps)
		e.Wall, e.Logical = wall, 1
		return e
	}
	secret := NewSecret()
	e1, w1 := sealWelcome(t, alice, header(alice, tag, t0.UnixMilli(), dep), secret, keys, holders, to)
	if _, s, err := OpenWelcome(e1, w1, bob.id, bob.ring, nil); err != nil || s != secret {
		t.Fatalf("bob opens the original: %v", err)
	}
	shareOf := func(w *Welcome, id peer.ID) (int, Seal) {
		t.Helper()
		for i, s := range w.Seals {
			if bytes.Equal(s.Recipient, []byte(id)) {
				return i, s
			}
		}
		t.Fatalf("no share for %s", id)
		return 0, Seal{}
	}
	// resign replaces e's body with w, as from signs it.
	resign := func(t testing.TB, from dev, e *Envelope, w Welcome) (*Envelope, *Welcome) {
		t.Helper()
		body, err := detcbor.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		c := *e
		c.Kind, c.Epoch, c.Index, c.Body, c.Sig = KindWelcome, nil, 0, body, nil
		d := signed(t, from, &c)
		dw, err := DecodeWelcome(d.Body)
		if err != nil {
			t.Fatalf("decode welcome: %v", err)
		}
		return d, dw
	}
	// lift puts bob's share of welcome 1, and its commitment, into a
	// welcome sealed by from in header e.
	lift := func(t testing.TB, from dev, e *Envelope) (*Envelope, *Welcome) {
		t.Helper()
		e, w := sealWelcome(t, from, e, NewSecret(), keys, holders, to)
		if _, _, err := OpenWelcome(e, w, bob.id, bob.ring, nil); err != nil {
			t.Fatalf("bob cannot open the welcome the share is lifted into: %v", err)
		}
		lifted := *w
		lifted.Commit = w1.Commit
		lifted.Seals = slices.Clone(w.Seals)
		i, _ := shareOf(w, bob.id)
		_, lifted.Seals[i] = shareOf(w1, bob.id)
		return resign(t, from, e, lifted)
	}
	withHolders := func(holders ...peer.ID) Welcome {
		w := *w1
		w.Members = canonMembers(holders)
		return w
	}
	other := Tag([]byte("another-conv-id-"), alice.id)

	// The same body re-signed in the same header still opens: what fails
	// below fails because of the change alone.
	re, rw := resign(t, alice, e1, *w1)
	if _, s, err := OpenWelcome(re, rw, bob.id, bob.ring, nil); err != nil || s != secret {
		t.Fatalf("re-signed original: %v", err)
	}
	for name, attack := range map[string]func(testing.TB) (*Envelope, *Welcome){
		"share lifted into another sender's welcome": func(t testing.TB) (*Envelope, *Welcome) {
			return lift(t, mallory, header(mallory, tag, t0.UnixMilli(), dep))
		},
		"share lifted into a welcome with other deps": func(t testing.TB) (*Envelope, *Welcome) {
			return lift(t, alice, header(alice, tag, t0.UnixMilli(), dep2))
		},
		"share lifted into a welcome with more deps": func(t testing.TB) (*Envelope, *Welcome) {
			return lift(t, alice, header(alice, tag, t0.UnixMilli(), dep, dep2))
		},
		"share lifted into a welcome at another time": func(t testing.TB) (*Envelope, *Welcome) {
			return lift(t, alice, header(alice, tag, t0.UnixMilli()+1, dep))
		},
		"holder added": func(t testing.TB) (*Envelope, *Welcome) {
			return resign(t, alice, e1, withHolders(append(slices.Clone(holders), dave.id)...))
		},
		"holder removed": func(t testing.TB) (*Envelope, *Welcome) {
			return resign(t, alice, e1, withHolders(bob.id, carol.id, mallory.id))
		},
		"welcome replayed into another conversation": func(t testing.TB) (*Envelope, *Welcome) {
			return resign(t, alice, header(alice, other, t0.UnixMilli(), dep), *w1)
		},
	} {
		t.Run(name, func(t *testing.T) {
			e, w := attack(t)
			if _, _, err := OpenWelcome(e, w, bob.id, bob.ring, nil); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("bob: %v", err)
			}
		})
	}

	t.Run("secret other than the committed one", func(t *testing.T) {
		e := header(alice, tag, t0.UnixMilli(), dep)
		s1, s2 := NewSecret(), NewSecret()
		if err := SealWelcome(e, s1, keys, holders, to); err != nil {
			t.Fatal(err)
		}
		w1, err := DecodeWelcome(e.Body)
		if err != nil {
			t.Fatal(err)
		}
		if err := SealWelcome(e, s2, keys, holders, to); err != nil {
			t.Fatal(err)
		}
		w2, err := DecodeWelcome(e.Body)
		if err != nil {
			t.Fatal(err)
		}
		spliced := *w1
		spliced.Seals = slices.Clone(w1.Seals)
		i, _ := shareOf(w1, bob.id)
		_, spliced.Seals[i] = shareOf(w2, bob.id)
		se, sw := resign(t, alice, e, spliced)
		if _, s, err := OpenWelcome(se, sw, carol.id, carol.ring, nil); err != nil || s != s1 {
			t.Fatalf("carol: %v", err)
		}
		if _, s, err := OpenWelcome(se, sw, bob.id, bob.ring, nil); !errors.Is(err, ErrBadCommit) || s != (Secret{}) {
			t.Fatalf("bob, sealed another secret: %v", err)
		}
		// Every share of s2 under s1's commitment.
		w2.Commit = w1.Commit
		se, sw = resign(t, alice, e, *w2)
		for _, d := range []dev{bob, carol, mallory} {
			if _, _, err := OpenWelcome(se, sw, d.id, d.ring, nil); !errors.Is(err, ErrBadCommit) {
				t.Fatalf("%s: %v", d.id, err)
			}
		}
	})

	t.Run("DecodeWelcome shapes", func(t *testing.T) {
		mut := func(f func(w *Welcome)) []byte {
			w := *w1
			w.Members = slices.Clone(w1.Members)
			w.Seals = slices.Clone(w1.Seals)
			w.Commit = slices.Clone(w1.Commit)
			f(&w)
			b, err := detcbor.Marshal(w)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		if _, err := DecodeWelcome(mut(func(*Welcome) {})); err != nil {
			t.Fatalf("unchanged welcome: %v", err)
		}
		if _, err := DecodeWelcome(mut(func(w *Welcome) { w.Seals = nil })); err != nil {
			t.Fatalf("welcome without shares: %v", err)
		}
		bobAt := slices.IndexFunc(w1.Members, func(m []byte) bool { return bytes.Equal(m, []byte(bob.id)) })
		for name, in := range map[string][]byte{
			"unsorted holders":      mut(func(w *Welcome) { w.Members[0], w.Members[1] = w.Members[1], w.Members[0] }),
			"duplicate holder":      mut(func(w *Welcome) { w.Members = slices.Insert(w.Members, 1, w.Members[1]) }),
			"share to a non-holder": mut(func(w *Welcome) { w.Members = slices.Delete(w.Members, bobAt, bobAt+1) }),
			"short commitment":      mut(func(w *Welcome) { w.Commit = w.Commit[:16] }),
			"long commitment":       mut(func(w *Welcome) { w.Commit = append(w.Commit, 0) }),
			"no commitment":         mut(func(w *Welcome) { w.Commit = nil }),
			"no holders":            mut(func(w *Welcome) { w.Members, w.Seals = nil, nil }),
			"empty holder":          mut(func(w *Welcome) { w.Members = slices.Insert(w.Members, 0, []byte{}) }),
			"65-byte holder":        mut(func(w *Welcome) { w.Members = append(w.Members, bytes.Repeat([]byte{0xff}, 65)) }),
			"unsorted shares":       mut(func(w *Welcome) { w.Seals[0], w.Seals[1] = w.Seals[1], w.Seals[0] }),
			"two shares to one":     mut(func(w *Welcome) { w.Seals = slices.Insert(w.Seals, 1, w.Seals[1]) }),
			"not CBOR":              []byte("welcome"),
			"trailing byte":         append(mut(func(*Welcome) {}), 0),
		} {
			if _, err := DecodeWelcome(in); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: %v", name, err)
			}
		}
	})
}
