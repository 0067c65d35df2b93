package chat

import (
	"bytes"
	"testing"

	"github.com/medmesh/medmesh/crdt"
)

// TestRoleLink: the creator links a conversation to an on-call role; every
// member sees it, no envelope carries it in the clear, and a member who is
// not an admin cannot relabel it.
func TestRoleLink(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("ward", alice, bob))
	ok := must[crdt.OpID](t)
	link := RoleLink{ID: "cardio-reg", Name: "Cardiology registrar on call"}
	envs, _ := ok(split(ra.SetRole(&link)))
	for _, e := range envs {
		if bytes.Contains(e, []byte(link.ID)) || bytes.Contains(e, []byte("Cardiology")) {
			t.Fatal("an envelope carries the role link in the clear")
		}
	}
	deliver(t, envs, rb)
	for _, r := range []*Replica{ra, rb} {
		if st := r.State(); st.Role == nil || *st.Role != link {
			t.Fatalf("role link: %+v", st.Role)
		}
	}
	if out, err := rb.SetRole(&RoleLink{ID: "other"}); err == nil || len(out.Envelopes) != 0 {
		t.Fatalf("a non-admin relabelled the conversation: %v", err)
	}
	if _, err := ra.SetRole(&RoleLink{ID: string(make([]byte, maxRoleID+1))}); err == nil {
		t.Fatal("oversized role ID accepted")
	}
	envs, _ = ok(split(ra.SetRole(nil)))
	deliver(t, envs, rb)
	if rb.State().Role != nil {
		t.Fatal("cleared role link still shown")
	}
}
