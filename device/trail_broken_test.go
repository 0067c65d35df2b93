package device_test

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/testnet"
)

// TestBrokenTrailDeviceStillRuns: a device whose audit head is corrupt
// starts anyway — messages flow — and reports its trail as broken in its
// status; the corrupt log is left as it is, never replaced by a fresh one.
func TestBrokenTrailDeviceStillRuns(t *testing.T) {
	c := testnet.NewCA(t)
	aid, bid := c.Enrol(t, "alice"), c.Enrol(t, "bob")
	bad := []byte("not a signed head")
	headKey := ds.NewKey("/audit/head")
	if err := bid.Store.Put(context.Background(), headKey, bad); err != nil {
		t.Fatal(err)
	}
	a := testnet.Start(t, c, aid)
	b := testnet.Start(t, c, bid, testnet.Boot(a))
	testnet.Knows(t, a, b)
	st := b.D.Audit().Stats()
	if !st.Broken || st.LastError == "" {
		t.Fatalf("bob's trail with a corrupt head: %+v, want broken with an error", st)
	}
	id, err := a.C.Create("ward", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "bob joined", func() bool { return testnet.Joined(b, id, 2) })
	testnet.Send(t, a, id, "hello")
	testnet.Eventually(t, 15*time.Second, "bob has the message", func() bool { return slices.Contains(testnet.Texts(b, id), "hello") })
	testnet.Eventually(t, 15*time.Second, "bob counts what it could not record", func() bool { return b.D.Audit().Stats().Failed > 0 })
	if _, err := b.D.Audit().Verify(context.Background(), nil); err == nil {
		t.Fatal("a broken trail verifies")
	}
	// An export the trail cannot record does not happen.
	if err := b.D.Audit().RecordExport(id, nil); err == nil {
		t.Fatal("an export was recorded in a broken trail")
	}
	b.Stop()
	got, err := bid.Store.Get(context.Background(), headKey)
	if err != nil || !bytes.Equal(got, bad) {
		t.Fatalf("the corrupt head was replaced: %q, %v", got, err)
	}
}
