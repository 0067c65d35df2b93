package node

import (
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/medmesh/medmesh/rota"
)

// TestRedteam10ReplayDrainsVictimRate: the rota rate limit is charged to
// an op's signer, whoever delivers it, and a replayed op counts as new
// once the role's gone list has forgotten it. Mallory, a registrar,
// flushes the gone list within her own burst (each take names sixteen
// made-up op IDs, which compaction remembers), then replays the registrar
// Reg's old takes — which every device saw over months of shifts — as
// fast as she likes: each is taken in again (and compacted again), spends
// one of Reg's tokens, and is forwarded. Reg's bucket is empty on every
// device; Reg's real hand-over at the end of the shift is refused with
// ErrRotaRate, and the role stays on Reg.
func TestRedteam10ReplayDrainsVictimRate(t *testing.T) {
	c := newCA(t, "General Hospital")
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	admin := startNode(t, c, c.enrolAs(t, "admin", "north", rota.AdminRole), func(cfg *Config) { cfg.Now = clock })
	regDev := c.enrolAs(t, "reg", "north", "registrar")
	reg := startNode(t, c, regDev, bootstrap(admin))
	malDev := c.enrolAs(t, "mallory", "north", "registrar")
	mal := startNode(t, c, malDev, bootstrap(admin))
	eventually(t, 10*time.Second, "all admitted", func() bool {
		return admin.isAdmitted(reg.ID()) && admin.isAdmitted(mal.ID())
	})
	if _, err := admin.SubmitRota(RotaDraft{Kind: rota.KindDefine, Role: "reg", Name: "Registrar on call", Requires: "registrar"}); err != nil {
		t.Fatal(err)
	}
	sign := func(d device, dr rota.Draft) *rota.Op {
		t.Helper()
		dr.Role, dr.Site = "reg", "north"
		op, err := rota.Sign(d.key.Identity, dr)
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	// Months of shifts: Reg takes the role again and again (each take
	// naming the last), one every few hours.
	var history []*rota.Op
	var prev []rota.OpID
	for i := range rotaBurst + 8 {
		advance(4 * time.Hour)
		op := sign(regDev, rota.Draft{Kind: rota.KindTake, Time: clock(), Seen: prev})
		if _, err := admin.addRota([]*rota.Op{op}); err != nil {
			t.Fatalf("reg's take %d: %v", i, err)
		}
		history = append(history, op)
		prev = []rota.OpID{op.ID}
	}
	advance(time.Hour) // Reg's bucket is full again
	// Mallory flushes the role's gone list: well within her burst.
	for i := range rota.MaxGone/rota.MaxSeen + 8 {
		seen := make([]rota.OpID, rota.MaxSeen)
		for j := range seen {
			rand.Read(seen[j][:])
		}
		op := sign(malDev, rota.Draft{Kind: rota.KindTake, Time: clock().Add(time.Duration(i) * time.Millisecond), Seen: seen})
		if _, err := admin.addRota([]*rota.Op{op}); err != nil {
			t.Fatalf("mallory's take %d: %v", i, err)
		}
	}
	// The replay: Reg's old takes, signed by Reg long ago.
	replayed := 0
	for _, op := range history[:len(history)-1] {
		if added, _ := admin.addRota([]*rota.Op{op}); len(added) > 0 {
			replayed++
		}
	}
	t.Logf("%d of Reg's old takes taken in again", replayed)
	hand := sign(regDev, rota.Draft{Kind: rota.KindHandover, Time: clock(), Seen: []rota.OpID{history[len(history)-1].ID}, To: mal.ID()})
	if _, err := admin.addRota([]*rota.Op{hand}); errors.Is(err, ErrRotaRate) {
		t.Fatalf("Reg's real hand-over is refused after Mallory replayed %d of Reg's old ops: %v", replayed, err)
	}
}

// TestRedteam10ReplayAfterOwnFlushChargesForwarder: the next try after
// TestRedteam10ReplayDrainsVictimRate — Mallory, at her own rate, pushes
// the role's gone list out with takes of her own (each superseding the
// last, so compacted), then replays Reg's old takes from her device. Reg's
// mark supersedes them at once: they are charged to Mallory, the peer
// that delivered them, not to Reg, and not forwarded.
func TestRedteam10ReplayAfterOwnFlushChargesForwarder(t *testing.T) {
	c := newCA(t, "General Hospital")
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	admin := startNode(t, c, c.enrolAs(t, "admin", "north", rota.AdminRole), func(cfg *Config) { cfg.Now = clock })
	regDev := c.enrolAs(t, "reg", "north", "registrar")
	reg := startNode(t, c, regDev, bootstrap(admin))
	malDev := c.enrolAs(t, "mallory", "north", "registrar")
	mal := startNode(t, c, malDev, bootstrap(admin))
	eventually(t, 10*time.Second, "all admitted", func() bool {
		return admin.isAdmitted(reg.ID()) && admin.isAdmitted(mal.ID())
	})
	if _, err := admin.SubmitRota(RotaDraft{Kind: rota.KindDefine, Role: "reg", Name: "Registrar on call", Requires: "registrar"}); err != nil {
		t.Fatal(err)
	}
	sign := func(d device, dr rota.Draft) *rota.Op {
		t.Helper()
		dr.Role, dr.Site = "reg", "north"
		op, err := rota.Sign(d.key.Identity, dr)
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	var history []*rota.Op
	var prev []rota.OpID
	for i := range rotaBurst + 8 {
		advance(4 * time.Hour)
		op := sign(regDev, rota.Draft{Kind: rota.KindTake, Time: clock(), Seen: prev})
		if _, err := admin.addRota([]*rota.Op{op}); err != nil {
			t.Fatalf("reg's take %d: %v", i, err)
		}
		history = append(history, op)
		prev = []rota.OpID{op.ID}
	}
	advance(time.Hour)
	// Mallory's own takes, one per rotaInterval, each naming the last.
	prev = []rota.OpID{history[len(history)-1].ID}
	for i := range rota.MaxGone + 8 {
		advance(rotaInterval)
		op := sign(malDev, rota.Draft{Kind: rota.KindTake, Time: clock(), Seen: prev})
		if _, err := admin.addRotaFrom(mal.ID(), []*rota.Op{op}); err != nil {
			t.Fatalf("mallory's take %d: %v", i, err)
		}
		prev = []rota.OpID{op.ID}
	}
	replayed, refused := 0, 0
	for _, op := range history[:len(history)-1] {
		added, err := admin.addRotaFrom(mal.ID(), []*rota.Op{op})
		replayed += len(added)
		if errors.Is(err, ErrRotaRate) {
			refused++
		}
	}
	if replayed > 0 {
		t.Errorf("%d replayed old ops were returned to forward", replayed)
	}
	if refused == 0 {
		t.Errorf("Mallory replayed %d ops faster than her own rate allows", len(history)-1)
	}
	hand := sign(regDev, rota.Draft{Kind: rota.KindHandover, Time: clock(), Seen: prev, To: mal.ID()})
	if _, err := admin.addRota([]*rota.Op{hand}); errors.Is(err, ErrRotaRate) {
		t.Fatalf("Reg's real hand-over is refused after Mallory's replay: %v", err)
	}
}
