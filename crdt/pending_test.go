package crdt_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/medmesh/medmesh/crdt"
)

// TestPendingBudgets: ops waiting for a dependency (root, delivered last)
// are bounded by count, by bytes of bodies, and by bytes per author. An
// author over its budget loses its own oldest ops, so flooding cannot evict
// another author's; over the total, the oldest overall go.
func TestPendingBudgets(t *testing.T) {
	const KiB, MiB = 1 << 10, 1 << 20
	type step struct {
		name, author string
		size         int
		err          error // from Add
	}
	flood := func(author string, n, size int) []step {
		out := make([]step, n)
		for i := range out {
			out[i] = step{name: author + string(rune('A'+i%26)) + string(rune('a'+i/26)), author: author, size: size}
		}
		return out
	}
	names := func(steps []step) []string {
		var out []string
		for _, s := range steps {
			out = append(out, s.name)
		}
		return out
	}
	mallory := flood("mallory", 40, MiB)
	tests := []struct {
		name       string
		maxPending int   // 0: default
		maxBytes   int64 // 0: default
		perAuthor  int64 // 0: default
		steps      []step
		want       []string // still buffered, in buffering order
	}{
		{
			name:  "one author flooding cannot evict another's op",
			steps: append([]step{{name: "victim", author: "alice", size: MiB}}, mallory...),
			want:  append([]string{"victim"}, names(mallory[32:])...),
		},
		{
			name:     "author over budget loses its own oldest first",
			maxBytes: 64 * KiB, perAuthor: 2 * KiB,
			steps: []step{{"a0", "a", KiB, nil}, {"b0", "b", KiB, nil}, {"a1", "a", KiB, nil}, {"a2", "a", KiB, nil}},
			want:  []string{"b0", "a1", "a2"},
		},
		{
			name:     "total over budget evicts oldest overall",
			maxBytes: 4 * KiB, perAuthor: 2 * KiB,
			steps: []step{{"a0", "a", KiB, nil}, {"b0", "b", KiB, nil}, {"c0", "c", KiB, nil}, {"d0", "d", KiB, nil}, {"b1", "b", KiB, nil}},
			want:  []string{"b0", "c0", "d0", "b1"},
		},
		{
			name:     "an op buffered again counts as newest",
			maxBytes: 3 * KiB, perAuthor: 2 * KiB,
			steps: []step{
				{"a0", "a", KiB, nil}, {"a1", "a", KiB, nil}, {"a2", "a", KiB, nil}, // a0 evicted by a's budget
				{"a0", "a", KiB, nil},                        // fetched again: a1 evicted
				{"b0", "b", KiB, nil}, {"b1", "b", KiB, nil}, // total: a2 goes, not a0
			},
			want: []string{"a0", "b0", "b1"},
		},
		{
			name:       "count bound still holds",
			maxPending: 3,
			steps:      []step{{"a0", "a", 10, nil}, {"b0", "b", 10, nil}, {"c0", "c", 0, nil}, {"a1", "a", 10, nil}},
			want:       []string{"b0", "c0", "a1"},
		},
		{
			name:      "op over the author budget is not buffered",
			perAuthor: 2 * KiB,
			steps:     []step{{"a0", "a", KiB, nil}, {"big", "b", 2*KiB + 1, crdt.ErrPendingFull}},
			want:      []string{"a0"},
		},
		{
			name:     "op over the total budget is not buffered",
			maxBytes: 2 * KiB, perAuthor: 4 * KiB,
			steps: []step{{"a0", "a", KiB, nil}, {"big", "a", 3 * KiB, crdt.ErrPendingFull}},
			want:  []string{"a0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := crdt.NewDAG(crdt.NewMemStore())
			if err != nil {
				t.Fatal(err)
			}
			if d.MaxPending != crdt.DefaultMaxPending || d.MaxPendingBytes != 64*MiB || d.MaxPendingPerAuthor != 8*MiB {
				t.Fatalf("defaults: %d ops, %d bytes, %d per author", d.MaxPending, d.MaxPendingBytes, d.MaxPendingPerAuthor)
			}
			if tt.maxPending != 0 {
				d.MaxPending = tt.maxPending
			}
			if tt.maxBytes != 0 {
				d.MaxPendingBytes = tt.maxBytes
			}
			if tt.perAuthor != 0 {
				d.MaxPendingPerAuthor = tt.perAuthor
			}
			root := mkop("root", 1)
			ops := map[string]crdt.Op{}
			for _, s := range tt.steps {
				op := crdt.Op{ID: sha256.Sum256([]byte(s.name)), Deps: []crdt.OpID{root.ID}, Author: s.author,
					Time: crdt.Timestamp{Wall: 2}, Body: bytes.Repeat([]byte{'x'}, s.size)}
				ops[s.name] = op
				if applied, err := d.Add(op, time.Time{}); !errors.Is(err, s.err) || len(applied) != 0 {
					t.Fatalf("Add(%s) = %d applied, %v; want error %v", s.name, len(applied), err, s.err)
				}
				if s.err != nil && d.Pending(op.ID) {
					t.Fatalf("%s buffered despite %v", s.name, s.err)
				}
				// Bounds hold after every step, and the accounts add up.
				var total int64
				perAuthor := map[string]int64{}
				for _, o := range ops {
					if d.Pending(o.ID) {
						total += int64(len(o.Body))
						perAuthor[o.Author] += int64(len(o.Body))
					}
				}
				if d.PendingBytes() != total || total > d.MaxPendingBytes || d.PendingLen() > d.MaxPending {
					t.Fatalf("after %s: %d ops, %d bytes (counted %d), bounds %d ops, %d bytes",
						s.name, d.PendingLen(), d.PendingBytes(), total, d.MaxPending, d.MaxPendingBytes)
				}
				for a, n := range perAuthor {
					if n > d.MaxPendingPerAuthor {
						t.Fatalf("after %s: author %s holds %d bytes, budget %d", s.name, a, n, d.MaxPendingPerAuthor)
					}
				}
			}
			var got []string
			for name, op := range ops {
				if d.Pending(op.ID) {
					got = append(got, name)
				}
			}
			if slices.Sort(got); !slices.Equal(got, slices.Sorted(slices.Values(tt.want))) {
				t.Fatalf("buffered %v, want %v", got, tt.want)
			}
			if m := d.Missing(); len(m) != 1 || m[0] != root.ID {
				t.Fatalf("Missing = %v, want the root", m)
			}
			// The root releases what is left, in buffering order.
			applied, err := d.Add(root, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			var released []string
			for _, op := range applied[1:] {
				for name, o := range ops {
					if o.ID == op.ID {
						released = append(released, name)
					}
				}
			}
			if !slices.Equal(released, tt.want) {
				t.Fatalf("root released %v, want %v", released, tt.want)
			}
			if d.PendingLen() != 0 || d.PendingBytes() != 0 {
				t.Fatalf("after release: %d ops, %d bytes buffered", d.PendingLen(), d.PendingBytes())
			}
		})
	}
}
