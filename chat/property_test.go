package chat

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/patient"
)

// TestConvergence: replicas issue random ops of every kind — messages,
// replies, edits, deletes, reactions, receipts, and concurrent membership
// changes by two admins (adding and removing two devices that hold no
// replica) — while envelopes are delivered in random order, duplicated and
// dropped. Once everything is delivered, every replica's materialised state
// is identical, and no op went out in an epoch reaching a non-member.
func TestConvergence(t *testing.T) {
	seeds := 40
	if s := os.Getenv("MEDMESH_SEEDS"); s != "" {
		seeds, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		seeds = 8
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { convergence(t, seed) })
	}
}

func convergence(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	w := newWorld(t)
	devs := []*Device{w.device("a0"), w.device("a1"), w.device("r2"), w.device("r3")}
	x, y := w.device("x"), w.device("y")
	r0, envs := w.create(devs[0], "property", devs[1], devs[2], devs[3], x, y)
	reps := []*Replica{r0}
	for _, d := range devs[1:] {
		reps = append(reps, w.join(d, r0.Tag()))
	}
	pool := slices.Clone(envs)
	deliverAll(t, pool, reps[1:]...)
	p, _, err := split(r0.Promote(devs[1].ID))
	if err != nil {
		t.Fatal(err)
	}
	pool = append(pool, p...)
	deliverAll(t, p, reps...)

	for step := range 80 {
		w.now = w.now.Add(time.Duration(rng.IntN(20)) * time.Second)
		i := rng.IntN(len(reps))
		r := reps[i]
		out, err := randomOp(r, rng, x.ID, y.ID)
		if err != nil && !errors.Is(err, ErrNotAuthorised) && !errors.Is(err, ErrNoSuchMessage) {
			t.Fatalf("step %d replica %d: %v", step, i, err)
		}
		pool = append(pool, out...)
		// Partial, duplicated, out-of-order delivery; some envelopes dropped.
		for _, other := range reps {
			if other == r {
				continue
			}
			for range rng.IntN(4) {
				e := pool[rng.IntN(len(pool))]
				if err := other.Receive(e); err != nil && !benign(err) {
					t.Fatalf("step %d: %v", step, err)
				}
			}
		}
	}
	// Everything delivered, in a different random order to each replica.
	for _, r := range reps {
		order := slices.Clone(pool)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		deliverAll(t, append(order, order[:len(order)/3]...), r)
	}
	want := canon(reps[0].State())
	for i, r := range reps[1:] {
		if got := canon(r.State()); !reflect.DeepEqual(got, want) {
			t.Fatalf("replica %d diverged:\n got %+v\nwant %+v", i+1, got, want)
		}
		if m := r.Missing(); len(m) != 0 {
			t.Logf("missing %v pending %d has %v", m, r.dag.PendingLen(), r.dag.Has(m[0]))
			t.Fatalf("replica %d still misses ops", i+1)
		}
	}
	for _, r := range reps {
		checkEpochs(t, r)
	}
}

// benign errors are rejections the tests check separately.
func benign(err error) bool {
	for _, e := range []error{crdt.ErrDuplicate, ErrNotAuthorised, ErrRemoved, ErrEquivocation, ErrRefused, ErrRevokedSender} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func deliverAll(t *testing.T, envs [][]byte, to ...*Replica) {
	t.Helper()
	for _, r := range to {
		for _, e := range envs {
			if err := r.Receive(e); err != nil && !benign(err) {
				t.Fatal(err)
			}
		}
	}
}

func randomOp(r *Replica, rng *rand.Rand, x, y peer.ID) ([][]byte, error) {
	st := r.State()
	var mine, any []crdt.OpID
	for _, m := range st.Messages {
		if !m.Deleted {
			any = append(any, m.ID)
			if m.Sender == r.dev.ID {
				mine = append(mine, m.ID)
			}
		}
	}
	pick := func(ids []crdt.OpID) (crdt.OpID, error) {
		if len(ids) == 0 {
			return crdt.OpID{}, ErrNoSuchMessage
		}
		return ids[rng.IntN(len(ids))], nil
	}
	var out [][]byte
	var err error
	switch rng.IntN(10) {
	case 0, 1, 2:
		var reply crdt.OpID
		if len(any) > 0 && rng.IntN(3) == 0 {
			reply, _ = pick(any)
		}
		out, _, err = split(r.Send(fmt.Sprint("msg ", rng.Int()), SendOptions{Urgent: rng.IntN(5) == 0, ReplyTo: reply}))
	case 3:
		var id crdt.OpID
		if id, err = pick(mine); err == nil {
			out, _, err = split(r.Edit(id, fmt.Sprint("edited ", rng.Int())))
		}
	case 4:
		var id crdt.OpID
		if id, err = pick(mine); err == nil {
			out, _, err = split(r.Delete(id))
		}
	case 5:
		var id crdt.OpID
		if id, err = pick(any); err == nil {
			if rng.IntN(2) == 0 {
				out, _, err = split(r.React(id, "👍"))
			} else {
				out, _, err = split(r.Unreact(id, "👍"))
			}
		}
	case 6:
		var id crdt.OpID
		if id, err = pick(any); err == nil {
			out, _, err = split(r.Receipt(1+rng.IntN(3), id))
		}
	case 7, 8:
		target := x
		if rng.IntN(2) == 0 {
			target = y
		}
		if rng.IntN(2) == 0 {
			out, _, err = split(r.Remove(target))
		} else {
			out, _, err = split(r.Add(target))
		}
	case 9:
		out, _, err = split(r.SetRetention(0))
	}
	return out, err
}

type canonMsg struct {
	ID        crdt.OpID
	Sender    peer.ID
	Text      string
	Edited    bool
	Deleted   bool
	Urgent    bool
	ReplyTo   crdt.OpID
	Reactions map[string][]peer.ID
	Receipts  map[peer.ID]int
}

type canonState struct {
	Title     string
	Members   []peer.ID
	Admins    []peer.ID
	Patient   *patient.Patient
	PatientBy peer.ID
	Messages  []canonMsg
}

func canon(st *State) canonState {
	c := canonState{Title: st.Title, Members: st.Members, Admins: st.Admins, Patient: st.Patient, PatientBy: st.PatientBy}
	for _, m := range st.Messages {
		if m.Withdrawn != "" {
			continue // what this device had shown: local
		}
		c.Messages = append(c.Messages, canonMsg{m.ID, m.Sender, m.Text, m.Edited, m.Deleted, m.Urgent, m.ReplyTo, m.Reactions, m.Receipts})
	}
	return c
}
