package node

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/rota"
)

// rateBound is how many ops of one signer a device may have taken in
// since start: the burst and one per interval elapsed (plus one for the
// interval under way).
func rateBound(start time.Time) int {
	return rotaBurst + int(time.Since(start)/rotaInterval) + 1
}

// TestRotaRateLimit: mallory, a registrar with a modified client, pushes
// far more takes than the rate allows over ProtoRota. The admin's device
// takes in at most the burst (and what the elapsed time refills), refuses
// the rest — so it neither keeps nor offers them — and still takes in
// ann's take. Mallory's own device, through its API path (SubmitRota),
// is held to the same bound.
func TestRotaRateLimit(t *testing.T) {
	c := newCA(t, "General Hospital")
	admin := startNode(t, c, c.enrolAs(t, "admin", "north", rota.AdminRole))
	annDev := c.enrolAs(t, "ann", "north", "cardio-registrar")
	ann := startNode(t, c, annDev, bootstrap(admin))
	malDev := c.enrolAs(t, "mallory", "north", "cardio-registrar")
	mal := startNode(t, c, malDev, bootstrap(admin))
	eventually(t, 10*time.Second, "all admitted", func() bool {
		return admin.isAdmitted(ann.ID()) && admin.isAdmitted(mal.ID()) && mal.isAdmitted(admin.ID())
	})
	if _, err := admin.SubmitRota(RotaDraft{Kind: rota.KindDefine, Role: "cardio-reg", Name: "Cardiology registrar on call", Requires: "cardio-registrar"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{ann, mal} {
		eventually(t, 10*time.Second, n.self.Name+" learns the role", func() bool { _, ok := roleOf(n, "cardio-reg"); return ok })
	}

	start := time.Now()
	const flood = rotaBurst + 60
	var ops []*rota.Op
	offer, push := rotaOffer{}, rotaOps{}
	for i := range flood {
		op, err := rota.Sign(malDev.key.Identity, rota.Draft{Kind: rota.KindTake, Role: "cardio-reg", Site: "north",
			Time: start.Add(time.Duration(i) * time.Millisecond)})
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, op)
		offer.IDs = append(offer.IDs, op.ID[:])
		push.Ops = append(push.Ops, op.Raw())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := mal.host.NewStream(ctx, admin.ID(), ProtoRota)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFrame(s, offer); err != nil {
		t.Fatal(err)
	}
	var want rotaOffer
	if err := readFrame(msgio.NewVarintReaderSize(s, maxRotaMsg), &want, maxRotaOffer); err != nil || len(want.IDs) != flood {
		t.Fatalf("admin wants %d of %d: %v", len(want.IDs), flood, err)
	}
	if err := writeFrame(s, push); err != nil {
		t.Fatal(err)
	}
	s.CloseWrite()
	// The admin closes the stream once it has judged them all.
	buf := make([]byte, 1)
	s.Read(buf) //nolint:errcheck // EOF or reset: either way it is done
	s.Close()
	held := func() int {
		admin.rt.mu.Lock()
		defer admin.rt.mu.Unlock()
		n := 0
		for _, o := range ops {
			if admin.rt.r.Has(o.ID) {
				n++
			}
		}
		return n
	}
	eventually(t, 10*time.Second, "admin took in the burst", func() bool { return held() >= rotaBurst })
	if n, bound := held(), rateBound(start); n > bound || n == flood {
		t.Fatalf("admin took in %d of mallory's %d ops (bound %d)", n, flood, bound)
	}
	// A refused op is not offered on.
	admin.rt.mu.Lock()
	for _, o := range admin.rt.r.Ops() {
		if o.Signer == mal.ID() && !slices.ContainsFunc(ops, func(x *rota.Op) bool { return x.ID == o.ID }) {
			t.Errorf("unexpected op of mallory held")
		}
	}
	admin.rt.mu.Unlock()

	// Another colleague's op still gets through, to the admin's device too.
	if _, err := ann.SubmitRota(RotaDraft{Kind: rota.KindTake, Role: "cardio-reg"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "admin sees ann on call", func() bool {
		r, _ := roleOf(admin, "cardio-reg")
		return slices.Contains(holderIDs(r), ann.ID())
	})

	// Mallory's own device: its API path refuses past the bound too.
	limited := 0
	for i := range flood {
		_, err := mal.SubmitRota(RotaDraft{Kind: rota.KindTake, Role: "cardio-reg"})
		if errors.Is(err, ErrRotaRate) {
			limited = i
			break
		}
		if err != nil {
			t.Fatalf("take %d: %v", i, err)
		}
	}
	if limited == 0 || limited > rateBound(start) {
		t.Fatalf("mallory's device signed %d takes before the limit (bound %d)", limited, rateBound(start))
	}
}

// TestRotaLimiterBuckets: the limiter refills at one op per interval up
// to the burst, and keeps at most maxRotaSigners buckets.
func TestRotaLimiterBuckets(t *testing.T) {
	var l rotaLimiter
	now := time.Unix(1_700_000_000, 0)
	a := peer.ID("a")
	for range rotaBurst {
		if !l.allow(a, now) {
			t.Fatal("refused within the burst")
		}
		l.spend(a, now)
	}
	if l.allow(a, now) {
		t.Fatal("allowed past the burst")
	}
	if l.allow(a, now.Add(rotaInterval/2)) {
		t.Fatal("allowed before an interval passed")
	}
	if !l.allow(a, now.Add(rotaInterval)) {
		t.Fatal("refused after an interval")
	}
	for i := range 2 * maxRotaSigners {
		id := peer.ID(string(rune(i + 1000)))
		l.allow(id, now)
	}
	if n := len(l.buckets); n > maxRotaSigners {
		t.Fatalf("%d buckets", n)
	}
}
