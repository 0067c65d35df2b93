package e2e

import (
	"bytes"
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// marshalChainsReflect is RecvChains.Marshal as it was written first:
// records built and handed to detcbor. The hand encoder must match it.
func marshalChainsReflect(r *RecvChains) ([]byte, error) {
	var out []chainRecord
	for k, c := range r.chains {
		rec := chainRecord{Epoch: slices.Clone(k.epoch[:]), Sender: []byte(k.sender), CK: slices.Clone(c.ck[:]), Next: c.next}
		for i, sk := range c.skipped {
			rec.Skipped = append(rec.Skipped, skippedRecord{Index: i, MK: slices.Clone(sk.mk[:]), At: sk.at.Unix()})
		}
		slices.SortFunc(rec.Skipped, func(a, b skippedRecord) int { return cmp.Compare(a.Index, b.Index) })
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b chainRecord) int {
		if c := bytes.Compare(a.Epoch, b.Epoch); c != 0 {
			return c
		}
		return bytes.Compare(a.Sender, b.Sender)
	})
	return detcbor.Marshal(out)
}

// randomChains holds n chains over a few epochs, senders of different
// lengths, some with skipped keys (times before 1970 too).
func randomChains(rng *rand.Rand, n int) *RecvChains {
	r := NewRecvChains()
	for i := range n {
		var ep EpochID
		ep[0], ep[31] = byte(rng.IntN(3)), byte(i)
		c := &recvChain{next: 1 + rng.Uint32N(1<<20), skipped: map[uint32]skippedKey{}}
		for j := range c.ck {
			c.ck[j] = byte(rng.IntN(256))
		}
		for range rng.IntN(4) * rng.IntN(3) {
			var mk Secret
			mk[0] = byte(rng.IntN(256))
			c.skipped[rng.Uint32N(c.next)] = skippedKey{mk: mk, at: time.Unix(rng.Int64N(1<<34)-1<<33, 0)}
		}
		r.chains[chainKey{ep, peer.ID(fmt.Sprint("sender-", rng.IntN(1000), string(make([]byte, rng.IntN(40)))))}] = c
	}
	return r
}

// TestRecvChainsMarshalMatchesDetcbor: the hand encoder gives detcbor's
// bytes for the same records, and they load back.
func TestRecvChainsMarshalMatchesDetcbor(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{0, 1, 2, 30, 300} {
		for range 5 {
			r := randomChains(rng, n)
			got, err := r.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			want, err := marshalChainsReflect(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%d chains: hand encoding differs from detcbor's\n got %x\nwant %x", n, got, want)
			}
			back, err := UnmarshalRecvChains(got)
			if err != nil || len(back.chains) != len(r.chains) {
				t.Fatalf("%d chains: loaded %v, %v", n, back, err)
			}
		}
	}
}

// BenchmarkRecvChainsMarshal: a 64-member group's key state over four
// epochs (256 chains), by hand and through detcbor.
func BenchmarkRecvChainsMarshal(b *testing.B) {
	r := randomChains(rand.New(rand.NewPCG(1, 2)), 256)
	for _, m := range []struct {
		name string
		f    func(*RecvChains) ([]byte, error)
	}{{"hand", (*RecvChains).Marshal}, {"detcbor", marshalChainsReflect}} {
		b.Run(m.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.f(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
