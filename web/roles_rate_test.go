package web

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/rota"
)

// TestRolesRateLimited: a page (or a script with the API token) posting
// rota changes in a loop gets 429 with Retry-After once this device has
// signed more than the rota rate allows, and the rota still answers.
func TestRolesRateLimited(t *testing.T) {
	ca := testnet.NewCA(t)
	ap := testnet.Start(t, ca, ca.Enrol(t, "admin", rota.AdminRole))
	admin := serve(t, ap, WithRoles(ap.D))
	pp := testnet.Start(t, ca, ca.Enrol(t, "ann", "cardio-registrar"), testnet.Boot(ap))
	ann := serve(t, pp, WithRoles(pp.D))
	testnet.Knows(t, ap, pp)
	testnet.Knows(t, pp, ap)
	if code, out := admin.call(t, "POST", "/api/v1/roles", `{"action":"define","role":"cardio-reg","name":"Cardiology registrar on call","requires":"cardio-registrar"}`); code != 200 {
		t.Fatalf("define: %d %v", code, out)
	}
	testnet.Eventually(t, 15*time.Second, "ann learns the role", func() bool { _, ok := roleIn(ann.roles(t), "cardio-reg"); return ok })
	const tries = 1000 // far past any burst
	ok := 0
	for range tries {
		code, hdr, raw := ann.do(t, "POST", "/api/v1/roles", []byte(`{"action":"take","role":"cardio-reg"}`))
		if code == 200 {
			ok++
			continue
		}
		var out map[string]any
		if code != 429 || hdr.Get("Retry-After") == "" || json.Unmarshal(raw, &out) != nil ||
			!strings.Contains(out["error"].(string), "too many rota changes") {
			t.Fatalf("after %d takes: %d %q %s", ok, code, hdr.Get("Retry-After"), raw)
		}
		break
	}
	if ok == 0 || ok == tries {
		t.Fatalf("%d takes of %d accepted", ok, tries)
	}
	if v, found := roleIn(ann.roles(t), "cardio-reg"); !found || len(v.Holders) != 1 {
		t.Fatalf("role after the flood: %+v", v)
	}
}
