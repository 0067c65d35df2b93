package crdt

import (
	"slices"
	"testing"
	"time"
)

// TestSortedIDsShared: SortedIDs is the set IDs gives, and a slice it
// gave stays exactly as it was while more ops are applied (readers hold
// it without the DAG's lock); an append to it never writes into the
// DAG's set.
func TestSortedIDsShared(t *testing.T) {
	d, err := NewDAG(NewMemStore())
	if err != nil {
		t.Fatal(err)
	}
	var views [][]OpID
	var copies [][]OpID
	for i := range 120 {
		var id OpID
		id[0], id[1], id[2] = byte(i*53), byte(i), 2
		if _, err := d.Add(Op{ID: id, Author: "a", Time: Timestamp{Wall: int64(i)}, Body: []byte{1}}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if i%7 != 0 {
			continue
		}
		v := d.SortedIDs()
		if !slices.Equal(v, d.IDs()) || !slices.IsSortedFunc(v, OpID.Compare) {
			t.Fatalf("after %d ops: SortedIDs differs from IDs or is not sorted", i+1)
		}
		_ = append(v, OpID{0xff, 0xff}) // must copy: capacity is length
		views, copies = append(views, v), append(copies, slices.Clone(v))
	}
	for i := range views {
		if !slices.Equal(views[i], copies[i]) {
			t.Fatalf("view %d changed as ops were applied", i)
		}
	}
	if slices.Contains(d.SortedIDs(), OpID{0xff, 0xff}) {
		t.Fatal("an append to a view wrote into the DAG's set")
	}
}
