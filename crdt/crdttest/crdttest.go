// Package crdttest is the conformance suite every crdt.Store passes.
package crdttest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/medmesh/medmesh/crdt"
)

func op(i int, deps ...crdt.OpID) crdt.Op {
	return crdt.Op{
		ID: sha256.Sum256([]byte(fmt.Sprint("op", i))), Deps: deps, Author: "\x00\x24\x08\x01\xff binary peer ID",
		Time: crdt.Timestamp{Wall: int64(1000 + i), Logical: uint32(i % 3)}, Body: []byte(fmt.Sprint("body", i)),
	}
}

// Run checks a Store made by open (a fresh, empty store per call).
func Run(t *testing.T, open func(t *testing.T) crdt.Store) {
	t.Run("put get has", func(t *testing.T) {
		s := open(t)
		a := op(1)
		b := op(2, a.ID)
		for _, o := range []crdt.Op{a, b} {
			if err := s.Put(o); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Get(b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != b.ID || len(got.Deps) != 1 || got.Deps[0] != a.ID || got.Author != b.Author ||
			got.Time != b.Time || string(got.Body) != string(b.Body) {
			t.Fatalf("Get = %+v, want %+v", got, b)
		}
		if ok, err := s.Has(a.ID); !ok || err != nil {
			t.Fatalf("Has(a) = %v, %v", ok, err)
		}
		if n, _ := s.Len(); n != 2 {
			t.Fatalf("Len = %d", n)
		}
	})
	t.Run("missing and delete", func(t *testing.T) {
		s := open(t)
		if _, err := s.Get(op(9).ID); !errors.Is(err, crdt.ErrNotFound) {
			t.Fatalf("Get missing: %v", err)
		}
		a := op(1)
		s.Put(a)
		s.Put(a) // idempotent
		if n, _ := s.Len(); n != 1 {
			t.Fatalf("Len after double put = %d", n)
		}
		if err := s.Delete(a.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(a.ID); err != nil {
			t.Fatalf("second delete: %v", err)
		}
		if ok, _ := s.Has(a.ID); ok {
			t.Fatal("deleted op still there")
		}
	})
	t.Run("for each", func(t *testing.T) {
		s := open(t)
		want := map[crdt.OpID]bool{}
		for i := range 50 {
			o := op(i)
			s.Put(o)
			want[o.ID] = true
		}
		n := 0
		err := s.ForEach(func(o crdt.Op) error {
			if !want[o.ID] {
				return fmt.Errorf("unexpected op %s", o.ID)
			}
			n++
			return nil
		})
		if err != nil || n != 50 {
			t.Fatalf("ForEach saw %d ops, err %v", n, err)
		}
		stop := errors.New("stop")
		if err := s.ForEach(func(crdt.Op) error { return stop }); !errors.Is(err, stop) {
			t.Fatalf("ForEach error not returned: %v", err)
		}
	})
	t.Run("stubs", func(t *testing.T) {
		// A DAG reindexed from the store tells an op admitted without a
		// body (author kept) from one retention deleted (no author either).
		s := open(t)
		d, err := crdt.NewDAG(s)
		if err != nil {
			t.Fatal(err)
		}
		a, b, c := op(1), op(2), op(3)
		b.Deps, c.Deps = []crdt.OpID{a.ID}, []crdt.OpID{b.ID}
		d.Admit = func(o crdt.Op, _ bool) crdt.Admission {
			if o.ID == b.ID {
				return crdt.AdmitStub
			}
			return crdt.AdmitFull
		}
		for _, o := range []crdt.Op{a, b, c} {
			if _, err := d.Add(o, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Delete(c.ID); err != nil {
			t.Fatal(err)
		}
		again, err := crdt.NewDAG(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			o          crdt.Op
			stub, gone bool
		}{{a, false, false}, {b, true, false}, {c, false, true}} {
			if !again.Has(tt.o.ID) || again.Stub(tt.o.ID) != tt.stub || again.Gone(tt.o.ID) != tt.gone {
				t.Errorf("op %d after reindex: has %v, stub %v, gone %v; want stub %v, gone %v", tt.o.Time.Wall-1000,
					again.Has(tt.o.ID), again.Stub(tt.o.ID), again.Gone(tt.o.ID), tt.stub, tt.gone)
			}
		}
		if got, err := s.Get(b.ID); err != nil || got.Author != b.Author || len(got.Body) != 0 || got.Time != b.Time {
			t.Fatalf("stub as stored: %+v, %v", got, err)
		}
	})
}
