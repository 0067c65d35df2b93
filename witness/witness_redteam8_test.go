package witness

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/internal/check"
)

// The key holder the witness exists against cuts the log's tail and then
// grows it again past the entry the witness holds, before it next meets the
// witness: entries 1–3 are the genuine ones, 4–7 new. The witness keeps a
// head only by its entry number, so it replaces the genuine head 6 by the
// rewritten head 7 and answers with it; the device's check passes, and the
// evidence that entries 4–6 existed is gone from the witness as well.
// A witness should keep a head only if the new one is shown to extend it
// (for instance the deposit carries the entry hashes from the held entry
// to the new one, or the witness keeps the first conflicting head as
// evidence), and the device should learn the mismatch.
func TestRedteam8RegrownLogReplacesWitnessedHead(t *testing.T) {
	t.Skip("open (README, Audit trail, known limits): a truncated log grown back past the witnessed entry replaces the witness's head; needs an extension proof")
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	dev := w.add(t, key(2), 6, false)
	w.connect(t, anchor, dev)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the head is held", func() bool { return held(t, anchor, dev).Seq == 6 })
	genuine := held(t, anchor, dev)

	// The key holder keeps the first 3 genuine entries (the same clock and
	// events give the same chain), drops 4–6, and appends 4 others.
	dev.svc.Close()
	dev.st = dssync.MutexWrap(ds.NewMapDatastore())
	dev.log = openLog(t, dev.st, dev.sk, 3)
	for range 4 {
		if _, err := dev.log.Append(context.Background(), audit.Event{Kind: audit.Read, IDs: audit.IDs{Conversation: "innocuous"}}); err != nil {
			t.Fatal(err)
		}
	}
	dev.start(t, w, false)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the witness answers the rewritten device", func() bool {
		return dev.svc.Status() != nil
	})
	if s := dev.svc.Status(); s.Error == "" {
		t.Errorf("the rewritten log passes the witness's check: status %+v", s)
	}
	if h := held(t, anchor, dev); h.Seq != genuine.Seq || h.Hash != genuine.Hash {
		t.Errorf("the witness replaced the genuine head %d by the rewritten head %d: the cut entries leave no trace", genuine.Seq, h.Seq)
	}
}

// closeStore is a store that records being used after it was closed.
type closeStore struct {
	ds.Batching
	mu     sync.Mutex
	closed bool
	late   int
}

func (c *closeStore) touch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		c.late++
	}
}

func (c *closeStore) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	c.touch()
	return c.Batching.Get(ctx, k)
}

func (c *closeStore) Put(ctx context.Context, k ds.Key, v []byte) error {
	c.touch()
	return c.Batching.Put(ctx, k, v)
}

// Service.Close removes the handler and waits for its own goroutines, but
// not for deposits being handled: a colleague that opened a deposit stream
// before Close and writes after it makes the witness read and write its
// store after Close returned (the device closes its store next). The
// project's store refuses calls after Close, so the write is lost rather
// than corrupting anything, but the handler is a goroutine without an
// owner. handle should be counted in the service's WaitGroup (and end on
// its context), as node.owned does for the node's handlers.
func TestRedteam8DepositHandledAfterClose(t *testing.T) {
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	dev := w.add(t, key(2), 4, false)
	// Restart the witness on a store that notices late use.
	anchor.svc.Close()
	cs := &closeStore{Batching: anchor.st}
	anchor.st = cs
	anchor.start(t, w, true)
	w.connect(t, anchor, dev)

	rec, err := dev.log.Current().Record()
	if err != nil {
		t.Fatal(err)
	}
	var frame bytes.Buffer
	if err := msgio.NewVarintWriter(&frame).WriteMsg(rec); err != nil {
		t.Fatal(err)
	}
	half := frame.Len() / 2
	s, err := dev.h.NewStream(context.Background(), anchor.h.ID(), Protocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	// Half the frame: the witness starts handling and waits for the rest.
	if _, err := s.Write(frame.Bytes()[:half]); err != nil {
		t.Fatal(err)
	}
	check.Eventually(t, 10*time.Second, "the witness is handling the deposit", func() bool {
		anchor.svc.mu.Lock()
		defer anchor.svc.mu.Unlock()
		return anchor.svc.busy[dev.h.ID()]
	})
	anchor.svc.Close()
	cs.mu.Lock()
	cs.closed = true
	cs.mu.Unlock()

	_, _ = s.Write(frame.Bytes()[half:]) // a witness that ended the deposit on Close resets it
	// Whatever the witness does with it, the stream ends: an answer or a
	// reset.
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = msgio.NewVarintReaderSize(s, maxRecord).ReadMsg()
	cs.mu.Lock()
	late := cs.late
	cs.mu.Unlock()
	if late > 0 {
		t.Fatalf("the witness used its store %d times after Close returned", late)
	}
}

// `medmesh audit verify` without --head checks the log against the answer
// kept in the device's own store (Mine), and says the log "holds entry N of
// the head a witness held". But that answer is only a head signed by the
// device key — the very key the adversary holds, with the store. The key
// holder who cuts the log writes its own new head as the kept answer (or
// deletes it), and verify reports the cut log as witnessed. Nothing in the
// kept answer shows a witness ever held it. Have the witness sign its
// answer (its identity key over the device's head record, its own peer ID
// and time), keep that countersigned answer, and have Mine and verify
// check the witness's signature and name the witness; until then, the
// README should say the kept answer catches an accidental restore only,
// and that the witness's own copy (audit head --dir ANCHOR --peer ID) is
// the check against the key holder.
func TestRedteam8KeptAnswerWrittenByKeyHolder(t *testing.T) {
	t.Skip("open (README, Audit trail, known limits): the kept witness answer is signed by the device key only; verify against the key holder with --head from the witness")
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	dev := w.add(t, key(2), 6, false)
	w.connect(t, anchor, dev)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the answer is kept", func() bool {
		h, ok, err := Mine(context.Background(), dev.st, dev.sk.Public().(ed25519.PublicKey))
		return err == nil && ok && h.Seq == 6
	})

	// The key holder cuts the log to its first 3 entries and keeps, as
	// "the witness's answer", a head it signs itself.
	dev.svc.Close()
	dev.st = dssync.MutexWrap(ds.NewMapDatastore())
	dev.log = openLog(t, dev.st, dev.sk, 3)
	forged, err := dev.log.Current().Record()
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.st.Put(context.Background(), mineKey, forged); err != nil {
		t.Fatal(err)
	}
	// What `audit verify --dir DEV` does.
	h, ok, err := Mine(context.Background(), dev.st, dev.sk.Public().(ed25519.PublicKey))
	if err == nil && ok {
		if _, verr := dev.log.Verify(context.Background(), &h); verr == nil {
			t.Fatalf("the cut log verifies against a kept answer no witness gave (entry %d of 6)", h.Seq)
		}
	}
}
