package simulations

import (
	"strings"
	"testing"
)

// TestFullCarriesByHand: the full engine's devices carry only under
// routing medmesh-carry. a and c (one conversation) never meet; b, in
// another conversation, meets a and later c: with carriage b's device
// takes a's envelope and hands it to c; members only, nothing arrives.
func TestFullCarriesByHand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real nodes")
	}
	const trace = "up_s,down_s,a,b\n100,700,a,b\n1500,2100,b,c\n2200,2800,b,d\n"
	const msgs = "created_s,from,to,conversation\n50,a,c,team\n2300,b,d,other\n"
	for _, tc := range []struct {
		routing   string
		delivered bool
	}{{"medmesh", false}, {"medmesh-carry", true}} {
		s := traceScenario(t, trace, msgs)
		s.Routing = tc.routing
		w, err := Build(s, 1)
		if err != nil {
			t.Fatal(err)
		}
		r, err := w.RunFull(FullOptions{Scale: 200, Elastic: true}, nil) // a contact of 600 s: 3 s of wall time
		if err != nil {
			t.Fatal(err)
		}
		m := row(t, r, "a", "c", 50)
		if got := m.Delivered >= 0; got != tc.delivered {
			t.Fatalf("%s: a → c delivered %v (%+v), want %v", tc.routing, got, m, tc.delivered)
		}
		if tc.delivered && m.Delivered < 1500 {
			t.Fatalf("%s: delivered at %.0f s, before b met c", tc.routing, m.Delivered)
		}
		if bd := row(t, r, "b", "d", 2300); bd.Delivered < 0 {
			t.Fatalf("%s: b → d, in contact, not delivered: %+v", tc.routing, bd)
		}
	}
}

// TestFullRefusesDESOnlyRoutings: the full engine runs the devices as
// built: epidemic, or carriage other than the devices', is the DES's.
func TestFullRefusesDESOnlyRoutings(t *testing.T) {
	for _, tc := range []struct {
		routing string
		carry   Carry
		ok      bool
	}{
		{"", Carry{}, true},
		{"medmesh", Carry{}, true},
		{"medmesh-carry", Carry{}, true},
		{"medmesh-carry", Carry{Policy: "spray", Copies: 8, QuotaKiB: 1024}, true},
		{"medmesh-carry", Carry{Policy: "prophet"}, false},
		{"medmesh-carry", Carry{Copies: 4}, false},
		{"epidemic", Carry{}, false},
	} {
		s := Scenario{Name: "x", Routing: tc.routing, Carry: tc.carry}
		err := s.checkFull()
		if (err == nil) != tc.ok {
			t.Errorf("routing %q carry %+v: %v", tc.routing, tc.carry, err)
		}
		if err != nil && !strings.Contains(err.Error(), "--engine des") {
			t.Errorf("the refusal does not say what to do: %v", err)
		}
	}
}
