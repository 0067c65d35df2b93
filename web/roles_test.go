package web

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/rota"
)

// rotaDevs starts an admin (rota-admin), two registrars and a nurse, all
// serving the roles API, knowing one another.
func rotaDevs(t *testing.T) (admin, ann, bob, nurse *dev) {
	t.Helper()
	ca := testnet.NewCA(t)
	start := func(name string, roles []string, boot ...*testnet.Peer) *dev {
		p := testnet.Start(t, ca, ca.Enrol(t, name, roles...), testnet.Boot(boot...))
		return serve(t, p, WithRoles(p.D))
	}
	admin = start("admin", []string{rota.AdminRole})
	ann = start("ann", []string{"cardio-registrar"}, admin.Peer)
	bob = start("bob", []string{"cardio-registrar"}, admin.Peer)
	nurse = start("nurse", []string{"nurse"}, admin.Peer)
	all := []*testnet.Peer{admin.Peer, ann.Peer, bob.Peer, nurse.Peer}
	for _, p := range all {
		testnet.Knows(t, p, slices.DeleteFunc(slices.Clone(all), func(o *testnet.Peer) bool { return o == p })...)
	}
	return admin, ann, bob, nurse
}

func (p *dev) roles(t *testing.T) []roleView {
	t.Helper()
	code, _, raw := p.do(t, "GET", "/api/v1/roles", nil)
	var out []roleView
	if code != 200 || json.Unmarshal(raw, &out) != nil {
		t.Fatalf("GET /api/v1/roles: %d %s", code, raw)
	}
	return out
}

func roleIn(vs []roleView, id string) (roleView, bool) {
	for _, v := range vs {
		if v.ID == id {
			return v, true
		}
	}
	return roleView{}, false
}

func holderNames(v roleView) []string {
	var out []string
	for _, h := range v.Holders {
		out = append(out, h.Name)
	}
	slices.Sort(out)
	return out
}

func TestRolesAPI(t *testing.T) {
	admin, ann, bob, nurse := rotaDevs(t)
	if got := admin.roles(t); len(got) != 0 {
		t.Fatalf("roles before any: %+v", got)
	}
	define := `{"action":"define","role":"cardio-reg","name":"Cardiology registrar on call","requires":"cardio-registrar","chain":["cardio-cons"]}`
	for _, tc := range []struct {
		who  *dev
		body string
		code int
	}{
		{nurse, define, 403},
		{ann, define, 403},
		{admin, `{"action":"define"`, 400},
		{admin, `{"action":"appoint","role":"cardio-reg"}`, 400},
		{admin, `{"action":"define","role":"Cardio Reg","name":"x","requires":"y"}`, 400},
		{admin, `{"action":"define","role":"cardio-reg","name":"","requires":"y"}`, 400},
		{admin, `{"action":"define","role":"cardio-reg","name":"x","requires":"y","chain":["cardio-reg"]}`, 400},
		{ann, `{"action":"take","role":"cardio-reg","name":"x"}`, 400},
		{ann, `{"action":"take","role":"cardio-reg"}`, 404},
		{admin, define, 200},
	} {
		if code, out := tc.who.call(t, "POST", "/api/v1/roles", tc.body); code != tc.code {
			t.Fatalf("%s %s: %d %v, want %d", tc.who.Ident.Name, tc.body, code, out, tc.code)
		}
	}
	for _, p := range []*dev{ann, bob, nurse} {
		testnet.Eventually(t, 15*time.Second, p.Ident.Name+" learns the role", func() bool { _, ok := roleIn(p.roles(t), "cardio-reg"); return ok })
	}
	v, _ := roleIn(nurse.roles(t), "cardio-reg")
	if v.Name != "Cardiology registrar on call" || v.Requires != "cardio-registrar" || !slices.Equal(v.Chain, []string{"cardio-cons"}) || len(v.Holders) != 0 || v.Split || v.Site != "" {
		t.Fatalf("role as the nurse sees it: %+v", v)
	}

	if code, out := nurse.call(t, "POST", "/api/v1/conversations", `{"role":"cardio-reg"}`); code != 409 {
		t.Fatalf("message to a role nobody holds: %d %v", code, out)
	}
	if code, _ := nurse.call(t, "POST", "/api/v1/roles", `{"action":"take","role":"cardio-reg"}`); code != 403 {
		t.Fatalf("take by a nurse: %d", code)
	}
	if code, out := ann.call(t, "POST", "/api/v1/roles", `{"action":"take","role":"cardio-reg"}`); code != 200 || out["holders"] == nil {
		t.Fatalf("take by ann: %d %v", code, out)
	}
	if code, _ := ann.call(t, "POST", "/api/v1/roles", `{"action":"handover","role":"cardio-reg","to":"nurse"}`); code != 403 {
		t.Fatalf("hand-over to a nurse: %d", code)
	}
	if code, _ := ann.call(t, "POST", "/api/v1/roles", `{"action":"handover","role":"cardio-reg","to":"nobody"}`); code != 400 {
		t.Fatalf("hand-over to nobody: %d", code)
	}
	if code, _ := nurse.call(t, "POST", "/api/v1/roles", `{"action":"release","role":"cardio-reg"}`); code != 403 {
		t.Fatalf("release by a nurse: %d", code)
	}
	testnet.Eventually(t, 15*time.Second, "the nurse sees ann on call", func() bool {
		v, _ := roleIn(nurse.roles(t), "cardio-reg")
		return slices.Equal(holderNames(v), []string{"ann"})
	})

	// A message to the role: the nurse's device resolves ann and says so.
	code, out := nurse.call(t, "POST", "/api/v1/conversations", `{"role":"cardio-reg"}`)
	if code != 201 {
		t.Fatalf("message to the role: %d %v", code, out)
	}
	var ans struct {
		ID   string     `json:"id"`
		Role roleAnswer `json:"role"`
	}
	raw, _ := json.Marshal(out)
	json.Unmarshal(raw, &ans) //nolint:errcheck
	if ans.Role.ID != "cardio-reg" || ans.Role.Name != "Cardiology registrar on call" || len(ans.Role.Holders) != 1 ||
		ans.Role.Holders[0].PeerID != ann.ID.String() || ans.Role.Split || ans.Role.AsOf.IsZero() {
		t.Fatalf("answer: %s", raw)
	}
	code, conv := nurse.call(t, "GET", "/api/v1/conversations/"+ans.ID, "")
	if role, _ := conv["role"].(map[string]any); code != 200 || role["id"] != "cardio-reg" || role["name"] != "Cardiology registrar on call" || conv["title"] != "Cardiology registrar on call" {
		t.Fatalf("conversation: %d %v", code, conv)
	}
	testnet.Eventually(t, 15*time.Second, "ann is in the conversation", func() bool {
		code, c := ann.call(t, "GET", "/api/v1/conversations/"+ans.ID, "")
		role, _ := c["role"].(map[string]any)
		return code == 200 && role["id"] == "cardio-reg"
	})
	for _, body := range []string{`{"role":"nope"}`, `{"role":"Bad Role!"}`} {
		if code, _ := nurse.call(t, "POST", "/api/v1/conversations", body); code != 404 && code != 400 {
			t.Fatalf("%s: %d", body, code)
		}
	}

	// Hand-over to bob; the audit trails say so.
	if code, out := ann.call(t, "POST", "/api/v1/roles", `{"action":"handover","role":"cardio-reg","to":"bob"}`); code != 200 {
		t.Fatalf("hand-over to bob: %d %v", code, out)
	}
	testnet.Eventually(t, 15*time.Second, "bob on call everywhere", func() bool {
		for _, p := range []*dev{admin, ann, bob, nurse} {
			if v, _ := roleIn(p.roles(t), "cardio-reg"); !slices.Equal(holderNames(v), []string{"bob"}) || v.Split {
				return false
			}
		}
		return true
	})
	ctx := context.Background()
	if err := ann.D.Audit().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	es, err := ann.D.Audit().Since(ctx, time.Time{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []audit.Kind
	for _, e := range es {
		if e.Kind == audit.RoleTaken || e.Kind == audit.RoleHandedOver {
			kinds = append(kinds, e.Kind)
			if e.Kind == audit.RoleHandedOver && e.IDs.Peer != bob.ID.String() {
				t.Fatalf("hand-over recorded to %s", e.IDs.Peer)
			}
		}
	}
	if !slices.Equal(kinds, []audit.Kind{audit.RoleTaken, audit.RoleHandedOver}) {
		t.Fatalf("ann's audit trail: %v", kinds)
	}
}

// TestRolesHostilePage: a page of another origin in the same browser
// cannot take or define a role, nor read who is on call.
func TestRolesHostilePage(t *testing.T) {
	ca := testnet.NewCA(t)
	p := testnet.Start(t, ca, ca.Enrol(t, "admin", rota.AdminRole))
	d := serve(t, p, WithRoles(p.D))
	for _, m := range []string{"GET", "POST"} {
		code, _, body := request(t, m, d.srv.URL+"/api/v1/roles", "", `{"action":"define","role":"x","name":"x","requires":"y"}`,
			map[string]string{"Origin": "https://evil.example"})
		if code != 403 || !strings.Contains(body, "error") {
			t.Fatalf("%s from another origin: %d %s", m, code, body)
		}
		if code, _, _ := request(t, m, d.srv.URL+"/api/v1/roles", "", `{}`, nil); code != 401 {
			t.Fatalf("%s without the token: %d", m, code)
		}
	}
	if got := d.roles(t); len(got) != 0 {
		t.Fatalf("a hostile request defined a role: %+v", got)
	}
}
