package crdt_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/crdt"
)

type admitCall struct {
	id     crdt.OpID
	wanted bool
}

// TestAdmission: Admit decides for an op once its dependencies are present
// (x, which w waits for): applied in full, applied as a stub, or refused
// without a trace while w stays buffered.
func TestAdmission(t *testing.T) {
	tests := []struct {
		decide   crdt.Admission
		applied  bool // x applied (in full or as a stub)
		stub     bool
		refused  bool
		released bool // w applied after x
	}{
		{decide: crdt.AdmitFull, applied: true, released: true},
		{decide: crdt.AdmitStub, applied: true, stub: true, released: true},
		{decide: crdt.Refuse, refused: true},
		{decide: crdt.Admission(9), refused: true}, // unknown: refuse
	}
	for _, tt := range tests {
		t.Run(tt.decide.String(), func(t *testing.T) {
			store := crdt.NewMemStore()
			d, _ := crdt.NewDAG(store)
			root := mkop("root", 1)
			x := mkop("x", 2, root.ID)
			w := mkop("w", 3, x.ID)
			var calls []admitCall
			d.Admit = func(op crdt.Op, wanted bool) crdt.Admission {
				calls = append(calls, admitCall{op.ID, wanted})
				if op.ID == x.ID {
					return tt.decide
				}
				return crdt.AdmitFull
			}
			for _, op := range []crdt.Op{root, w} { // w waits for x
				if _, err := d.Add(op, time.Time{}); err != nil {
					t.Fatal(err)
				}
			}
			applied, err := d.Add(x, time.Time{})
			if tt.refused != errors.Is(err, crdt.ErrRefused) || (!tt.refused && err != nil) {
				t.Fatalf("Add(x) error %v, refused %v", err, tt.refused)
			}
			wantCalls := []admitCall{{root.ID, false}, {x.ID, true}}
			if tt.released {
				wantCalls = append(wantCalls, admitCall{w.ID, false})
			}
			if !slices.Equal(calls, wantCalls) {
				t.Fatalf("Admit called %v, want %v", calls, wantCalls)
			}
			inStore, _ := store.Has(x.ID)
			if d.Has(x.ID) != tt.applied || inStore != tt.applied || slices.Contains(d.IDs(), x.ID) != tt.applied ||
				d.Stub(x.ID) != tt.stub || d.Gone(x.ID) || d.Pending(x.ID) {
				t.Fatalf("x: has %v, stored %v, stub %v, gone %v, pending %v", d.Has(x.ID), inStore, d.Stub(x.ID), d.Gone(x.ID), d.Pending(x.ID))
			}
			if tt.released != d.Has(w.ID) || tt.released == d.Pending(w.ID) {
				t.Fatalf("w: applied %v, pending %v", d.Has(w.ID), d.Pending(w.ID))
			}
			if tt.refused {
				if len(applied) != 0 || d.Len() != 1 || !slices.Equal(d.Missing(), []crdt.OpID{x.ID}) {
					t.Fatalf("refused: applied %d, len %d, missing %v", len(applied), d.Len(), d.Missing())
				}
				return
			}
			if len(applied) != 2 || applied[0].ID != x.ID || applied[1].ID != w.ID {
				t.Fatalf("applied %v", applied)
			}
			got, err := store.Get(x.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range []crdt.Op{applied[0], got} {
				if op.Author != x.Author || op.Time != x.Time || !slices.Equal(op.Deps, x.Deps) || (len(op.Body) == 0) != tt.stub {
					t.Fatalf("x as applied or stored: %+v", op)
				}
			}
		})
	}
}

// TestRefusedThenStubbed: a refusal does not stop the cascade of other
// unblocked ops; the refused op is missing again, and when it is fetched
// again (now wanted) it can be stubbed, which releases its waiter. The stub
// survives a reindex from the store; retention turns it into a gone op.
func TestRefusedThenStubbed(t *testing.T) {
	store := crdt.NewMemStore()
	d, _ := crdt.NewDAG(store)
	root := mkop("root", 1)
	a := mkop("a", 2, root.ID)
	b := mkop("b", 2, root.ID)
	c := mkop("c", 3, a.ID) // waits for a
	e := mkop("e", 2, root.ID)
	refuse := map[crdt.OpID]bool{a.ID: true, b.ID: true}
	var calls []admitCall
	d.Admit = func(op crdt.Op, wanted bool) crdt.Admission {
		calls = append(calls, admitCall{op.ID, wanted})
		switch {
		case refuse[op.ID]:
			return crdt.Refuse
		case op.ID == a.ID && wanted:
			return crdt.AdmitStub
		}
		return crdt.AdmitFull
	}
	for _, op := range []crdt.Op{a, b, c, e} {
		if _, err := d.Add(op, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if len(calls) != 0 {
		t.Fatalf("Admit called for buffered ops: %v", calls)
	}
	applied, err := d.Add(root, time.Time{})
	if !errors.Is(err, crdt.ErrRefused) || !strings.Contains(err.Error(), a.ID.String()) || !strings.Contains(err.Error(), b.ID.String()) {
		t.Fatalf("Add(root) error %v: want both refusals", err)
	}
	if len(applied) != 2 || applied[0].ID != root.ID || applied[1].ID != e.ID {
		t.Fatalf("cascade stopped at a refusal: applied %v", applied)
	}
	if !d.Pending(c.ID) || !slices.Equal(d.Missing(), []crdt.OpID{a.ID}) || d.Has(a.ID) || d.Has(b.ID) || d.Pending(a.ID) {
		t.Fatalf("after refusals: c pending %v, missing %v", d.Pending(c.ID), d.Missing())
	}
	if n, _ := store.Len(); n != 2 {
		t.Fatalf("store holds %d ops, want root and e", n)
	}

	delete(refuse, a.ID)
	calls = nil
	applied, err = d.Add(a, time.Time{})
	if err != nil || len(applied) != 2 || applied[0].ID != a.ID || applied[0].Body != nil || applied[1].ID != c.ID {
		t.Fatalf("Add(a) again = %v, %v", applied, err)
	}
	if want := []admitCall{{a.ID, true}, {c.ID, false}}; !slices.Equal(calls, want) {
		t.Fatalf("Admit called %v, want %v", calls, want)
	}
	if !d.Stub(a.ID) || d.Stub(c.ID) || d.Stub(root.ID) || d.Gone(a.ID) || d.PendingLen() != 0 {
		t.Fatalf("stub %v (c %v), gone %v, pending %d", d.Stub(a.ID), d.Stub(c.ID), d.Gone(a.ID), d.PendingLen())
	}

	again, err := crdt.NewDAG(store)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Stub(a.ID) || again.Gone(a.ID) || again.Stub(c.ID) || again.Len() != d.Len() || !slices.Equal(again.Order(), d.Order()) {
		t.Fatalf("reindex: stub %v, gone %v, len %d want %d", again.Stub(a.ID), again.Gone(a.ID), again.Len(), d.Len())
	}
	if op, err := again.Get(a.ID); err != nil || op.Author != a.Author || op.Body != nil {
		t.Fatalf("stub as stored: %+v, %v", op, err)
	}
	if _, err := again.Add(a, time.Time{}); !errors.Is(err, crdt.ErrDuplicate) {
		t.Fatalf("a stub can be added again: %v", err)
	}

	if err := again.Delete(a.ID); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*crdt.DAG{again, must(crdt.NewDAG(store))} {
		if d.Stub(a.ID) || !d.Gone(a.ID) || !d.Has(a.ID) {
			t.Fatalf("deleted stub: stub %v, gone %v", d.Stub(a.ID), d.Gone(a.ID))
		}
	}
}
