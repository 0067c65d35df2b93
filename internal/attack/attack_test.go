package attack_test

import (
	"context"
	"io"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/internal/attack"
	"github.com/medmesh/medmesh/internal/testnet"
)

// TestOutsiderAttacks runs every outsider attack against a device on
// loopback that is talking to a colleague: each attack meets its bound,
// the victim's goroutines and heap come back to what they were, and the
// colleague's message still arrives and a newcomer is still admitted.
func TestOutsiderAttacks(t *testing.T) {
	ca := testnet.NewCA(t)
	victim := testnet.Start(t, ca, ca.Enrol(t, "victim"))
	colleague := testnet.Start(t, ca, ca.Enrol(t, "colleague"), testnet.Boot(victim))
	testnet.Knows(t, victim, colleague)
	testnet.Knows(t, colleague, victim)
	id, err := colleague.C.Create("ward", []peer.ID{victim.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "victim joined", func() bool { return testnet.Joined(victim, id, 2) })

	goroutines, heap := settle()
	target := peer.AddrInfo{ID: victim.ID, Addrs: victim.N.Host().Addrs()}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, r := range attack.Run(ctx, target, attack.Outsider()) {
		t.Logf("%-16s ok=%v %s (%v)", r.Name, r.OK, r.Detail, r.Took.Round(time.Millisecond))
		if !r.OK {
			t.Errorf("%s: the victim did not keep its bound: %s", r.Name, r.Detail)
		}
	}

	// The victim still serves honest peers.
	testnet.Send(t, colleague, id, "still here")
	testnet.Eventually(t, 10*time.Second, "the colleague's message arrives", func() bool {
		for _, s := range testnet.Texts(victim, id) {
			if s == "still here" {
				return true
			}
		}
		return false
	})
	newcomer := testnet.Start(t, ca, ca.Enrol(t, "newcomer"), testnet.Boot(victim))
	testnet.Eventually(t, 10*time.Second, "a newcomer is admitted", func() bool { return victim.N.IsAdmitted(newcomer.ID) })
	newcomer.Stop()

	// What the attacks cost is given back.
	cameBack(t, goroutines, heap, true)
}

// cameBack waits until the goroutines are back within a quarter of their
// level before an attack and, with checkHeap, checks the heap in use is at
// most twice its level (plus 16 MiB).
func cameBack(t *testing.T, goroutines int, heap uint64, checkHeap bool) {
	t.Helper()
	var g int
	testnet.Eventually(t, 30*time.Second, "goroutines back near their level before the attack", func() bool {
		g, _ = settle()
		return g <= goroutines+goroutines/4
	})
	_, h := settle()
	t.Logf("goroutines %d before, %d after; heap in use %d MiB before, %d MiB after", goroutines, g, heap>>20, h>>20)
	if checkHeap && h > 2*heap+16<<20 {
		t.Errorf("heap in use %d MiB after the attack, %d MiB before", h>>20, heap>>20)
	}
}

// settle collects garbage and reports the goroutines and heap in use.
func settle() (goroutines int, heap uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return runtime.NumGoroutine(), m.HeapInuse
}

// TestInsiderTruncatedFrames: an admitted colleague opens sync and
// directory streams to a device and sends frames cut short — a length
// that promises a megabyte and a few bytes of it, then the end of its
// side — 32 of each. Every stream ends at once, the device's goroutines
// and heap come back, and a colleague's message still arrives.
func TestInsiderTruncatedFrames(t *testing.T) {
	ca := testnet.NewCA(t)
	victim := testnet.Start(t, ca, ca.Enrol(t, "victim"))
	colleague := testnet.Start(t, ca, ca.Enrol(t, "colleague"), testnet.Boot(victim))
	insider := testnet.Start(t, ca, ca.Enrol(t, "insider"), testnet.Boot(victim))
	testnet.Knows(t, victim, colleague)
	testnet.Knows(t, colleague, victim)
	testnet.Eventually(t, 15*time.Second, "insider admitted", func() bool { return victim.N.IsAdmitted(insider.ID) })
	id, err := colleague.C.Create("ward", []peer.ID{victim.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "victim joined", func() bool { return testnet.Joined(victim, id, 2) })
	goroutines, heap := settle()

	for _, proto := range []protocol.ID{"/medmesh/sync/8", "/medmesh/directory/2"} {
		var wg sync.WaitGroup
		ended := make(chan time.Duration, 32)
		for range 32 {
			s, err := insider.N.Host().NewStream(context.Background(), victim.ID, proto)
			if err != nil {
				t.Fatalf("%s: %v", proto, err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				s.Write([]byte{0x80, 0x80, 0x40}) // a varint length of 1 MiB
				s.Write([]byte("cut short"))
				s.CloseWrite()
				s.SetReadDeadline(time.Now().Add(15 * time.Second))
				io.Copy(io.Discard, s)
				ended <- time.Since(t0)
				s.Close()
			}()
		}
		wg.Wait()
		close(ended)
		var longest time.Duration
		for d := range ended {
			longest = max(longest, d)
		}
		t.Logf("%s: 32 truncated frames, every stream ended within %v", proto, longest.Round(time.Millisecond))
		if longest > 12*time.Second {
			t.Errorf("%s: a truncated frame held a stream for %v", proto, longest)
		}
	}

	testnet.Send(t, colleague, id, "after the truncated frames")
	testnet.Eventually(t, 10*time.Second, "the colleague's message arrives", func() bool {
		return slices.Contains(testnet.Texts(victim, id), "after the truncated frames")
	})
	cameBack(t, goroutines, heap, true)
}

// TestInsiderMessageFlood: an admitted member floods a conversation with
// valid but useless messages — 300 in a burst, as fast as its device will
// seal them. The victim's goroutines come back to their level, and a
// colleague's message sent after the burst still arrives within the
// stated time.
func TestInsiderMessageFlood(t *testing.T) {
	ca := testnet.NewCA(t)
	victim := testnet.Start(t, ca, ca.Enrol(t, "victim"))
	colleague := testnet.Start(t, ca, ca.Enrol(t, "colleague"), testnet.Boot(victim))
	insider := testnet.Start(t, ca, ca.Enrol(t, "insider"), testnet.Boot(victim))
	testnet.Knows(t, colleague, victim, insider)
	id, err := colleague.C.Create("ward", []peer.ID{victim.ID, insider.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "everyone joined", func() bool {
		return testnet.Joined(victim, id, 3) && testnet.Joined(insider, id, 3)
	})
	goroutines, heap := settle()

	const flood = 300
	for i := range flood {
		if _, err := insider.C.Send(id, "useless "+strconv.Itoa(i), chat.SendOptions{}); err != nil {
			t.Fatalf("flood message %d: %v", i, err)
		}
	}
	t0 := time.Now()
	testnet.Send(t, colleague, id, "after the flood")
	testnet.Eventually(t, 30*time.Second, "the colleague's message arrives after the flood", func() bool {
		return slices.Contains(testnet.Texts(victim, id), "after the flood")
	})
	t.Logf("the colleague's message arrived %v after the flood of %d", time.Since(t0).Round(time.Millisecond), flood)
	cameBack(t, goroutines, heap, false)
}
