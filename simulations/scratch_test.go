package simulations

import (
	"fmt"
	"os"
	"testing"
)

func TestScratchSweep(t *testing.T) {
	if os.Getenv("SCRATCH") == "" {
		t.Skip()
	}
	base, err := Load(os.Getenv("SCEN"))
	if err != nil {
		base = Builtins[os.Getenv("SCEN")]
		base.ConversationSize = 4
	}
	var vs []variant
	for _, ttl := range []float64{24} {
		for _, l := range []int{4, 8, 16} {
			vs = append(vs, variant{fmt.Sprintf("spray L%d ttl%v", l, ttl), "medmesh-carry", Carry{Copies: l, TTLSeconds: ttl * 3600}})
		}

		vs = append(vs, variant{fmt.Sprintf("prophet ttl%v", ttl), "medmesh-carry", Carry{Policy: "prophet", TTLSeconds: ttl * 3600}})
	}
	for _, seed := range []uint64{1, 2, 3} {
		var edit []func(*World)
		if os.Getenv("CROSS") != "" {
			edit = append(edit, acrossGroups(4))
		}
		rows := compareRoutings(t, base, seed, vs, edit...)

		for _, r := range rows {
			t.Logf("seed %d %s relayed %d", seed, r, r.res.Relayed)
		}
	}
}
