package chat

import (
	"fmt"
	"testing"
	"time"

	"github.com/medmesh/medmesh/crdt"
)

// receiptWindow is conversations.ReceiptWindow (chat cannot import it).
const receiptWindow = 500 * time.Millisecond

// burstCost is what the delivered receipts of one burst cost.
type burstCost struct {
	ops     int // receipt ops made in the group
	verify  int // receipt envelopes the sender's device verifies and applies
	bytes   int // their bytes
	applyMS float64
}

// receiptBurst: alice sends k messages to a group of n members; each
// member takes them in one gossip delivery every gap and makes its
// delivered receipts — before: one explicit receipt per delivery (the
// scheme before cumulative receipts: each batch's fresh messages named);
// after: cumulative receipts coalesced as conversations does (one at
// once, then one at the end of each ReceiptWindow with anything new).
// Every receipt then reaches alice, whose device verifies and applies
// each; every message must end delivered to every member.
func receiptBurst(b *testing.B, n, k int, gap time.Duration, cumulative bool) burstCost {
	w := newWorld(b)
	alice := w.device("alice")
	var members []*Device
	for i := range n - 1 {
		d := w.device(fmt.Sprint("m", i))
		d.Prekeys.Current(w.now)
		members = append(members, d)
	}
	ra, envs := w.create(alice, "burst", members...)
	var msgs [][]byte
	for range k {
		e, _, err := split(ra.Send("bed 4 needs a review", SendOptions{}))
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, e...)
	}
	var c burstCost
	var receipts [][]byte
	keep := func(out Out, err error) {
		if err != nil {
			b.Fatal(err)
		}
		receipts = append(receipts, out.Envelopes...)
		c.ops += len(out.Envelopes)
	}
	for _, d := range members {
		r := w.join(d, ra.Tag())
		deliver(b, envs, r)
		r.Fresh()
		var open time.Duration = -1 // end of the open window (-1: none)
		owed := false
		for i, m := range msgs {
			at := time.Duration(i) * gap
			if cumulative && open >= 0 && at >= open { // the window ended before this arrival
				if owed {
					keep(r.Receipt(Delivered))
					open, owed = open+receiptWindow, false
				} else {
					open = -1
				}
			}
			if err := r.Receive(m); err != nil {
				b.Fatal(err)
			}
			fresh := r.Fresh()
			switch {
			case !cumulative:
				keep(r.do(&payload{Kind: kindReceipt, Level: Delivered, Targets: idBytes(fresh)}))
			case open < 0:
				keep(r.Receipt(Delivered))
				open = at + receiptWindow
			default:
				owed = true
			}
		}
		if owed {
			keep(r.Receipt(Delivered))
		}
	}
	start := time.Now()
	for _, raw := range receipts {
		if err := ra.Receive(raw); err != nil {
			b.Fatal(err)
		}
		c.verify++
		c.bytes += len(raw)
	}
	st := ra.State()
	c.applyMS = float64(time.Since(start).Microseconds()) / 1000
	for _, m := range st.Messages {
		if d := ra.DeliveryOf(m); d.State != StateDelivered || len(d.PerRecipient) != n-1 {
			b.Fatalf("message %s: %s to %d recipients", m.ID.String()[:8], d.State, len(d.PerRecipient))
		}
	}
	return c
}

func idBytes(ids []crdt.OpID) [][]byte {
	out := make([][]byte, len(ids))
	for i := range ids {
		out[i] = ids[i][:]
	}
	return out
}

// BenchmarkReceiptBurst: a burst of 100 messages (one gossip delivery
// every 10 ms) in a group of 64 and of 500 members: delivered receipt ops
// made in the group, and the receipt envelopes one device verifies (one
// Ed25519 verification each), their bytes and the time to apply them and
// materialise — before (explicit receipts per delivery, measured in the
// same run) and after (cumulative, coalesced over ReceiptWindow). Every
// other member's device verifies the same receipts (but its own) beside
// the 100 messages.
func BenchmarkReceiptBurst(b *testing.B) {
	const k, gap = 100, 10 * time.Millisecond
	for _, n := range []int{64, 500} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			var before, after burstCost
			for b.Loop() {
				before = receiptBurst(b, n, k, gap, false)
				after = receiptBurst(b, n, k, gap, true)
			}
			b.ReportMetric(float64(before.ops), "ops_before")
			b.ReportMetric(float64(after.ops), "ops_after")
			b.ReportMetric(float64(before.verify), "verifies/device_before")
			b.ReportMetric(float64(after.verify), "verifies/device_after")
			b.ReportMetric(float64(before.bytes)/1024, "KiB/device_before")
			b.ReportMetric(float64(after.bytes)/1024, "KiB/device_after")
			b.ReportMetric(before.applyMS, "ms/device_before")
			b.ReportMetric(after.applyMS, "ms/device_after")
			b.ReportMetric(float64(after.ops)/float64(before.ops), "ops_ratio")
		})
	}
}

// BenchmarkMaterialise100kReceipts: the full state of a 100,000-message
// conversation in which the other member sent a cumulative receipt every
// 100 messages (1,000 receipts) — compare with Materialise100k, which has
// none.
func BenchmarkMaterialise100kReceipts(b *testing.B) {
	w := newWorld(b)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("bench", alice, bob))
	for i := range 100_000 {
		e, _, err := split(ra.Send(fmt.Sprint("message ", i), SendOptions{}))
		if err != nil {
			b.Fatal(err)
		}
		deliver(b, e, rb)
		if i%100 == 99 {
			r, _, err := split(rb.Receipt(Delivered))
			if err != nil {
				b.Fatal(err)
			}
			deliver(b, r, ra)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ra.cache = nil
		st := ra.State()
		if n := len(st.Messages); n != 100_000 || st.Messages[n-1].Receipts[bob.ID] != Delivered {
			b.Fatalf("%d messages", n)
		}
	}
}
