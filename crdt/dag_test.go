package crdt

import (
	"slices"
	"testing"
	"time"
)

// TestIDsStaySorted: the cached sorted ID set follows every apply, in any
// order, and callers get their own copy.
func TestIDsStaySorted(t *testing.T) {
	d, err := NewDAG(NewMemStore())
	if err != nil {
		t.Fatal(err)
	}
	var ops []Op
	for i := range 200 {
		var id OpID
		id[0], id[1], id[2] = byte(i*37), byte(i), 1
		ops = append(ops, Op{ID: id, Author: "a", Time: Timestamp{Wall: int64(i)}, Body: []byte{1}})
	}
	for i, op := range ops {
		if _, err := d.Add(op, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if i%17 != 0 {
			continue
		}
		ids := d.IDs()
		if len(ids) != i+1 || !slices.IsSortedFunc(ids, OpID.Compare) {
			t.Fatalf("after %d ops: %d IDs, sorted %v", i+1, len(ids), slices.IsSortedFunc(ids, OpID.Compare))
		}
		ids[0] = OpID{0xff} // a caller's copy
		if d.IDs()[0] == (OpID{0xff}) {
			t.Fatal("IDs shares its cache with the caller")
		}
	}
}
