package web

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/node"
)

// TestFederatedInviteThroughTheAPI: asha (trust A) finds bea (trust B,
// federated both ways) in GET /api/v1/federated, never in the directory,
// starts a conversation naming her by peer ID; they write both ways. A
// staff ID never names a federated device, and no one of another trust
// is named before it is admitted.
func TestFederatedInviteThroughTheAPI(t *testing.T) {
	a, b := testnet.NewCA(t), testnet.NewCA(t)
	asha := start(t, a, a.Enrol(t, "asha"))
	bea := start(t, b, b.Enrol(t, "bea"))
	// Before federation, bea's peer ID names no one.
	asha.must(t, http.StatusUnprocessableEntity, "POST", "/api/v1/conversations", `{"title":"x","members":["`+bea.ID.String()+`"]}`)
	testnet.Federate(t, a.FederationRecord(t, b, identity.Policy{}, 1, false), asha.Peer)
	testnet.Federate(t, b.FederationRecord(t, a, identity.Policy{Invites: true}, 1, false), bea.Peer) // trust B lets our staff invite its devices
	testnet.Connect(t, bea.Peer, asha.Peer)
	testnet.Federated(t, asha.Peer, bea.Peer)

	var fed []node.FederatedInfo
	asha.getJSON(t, "/api/v1/federated", &fed)
	if len(fed) != 1 || fed[0].PeerID != bea.ID.String() || fed[0].Name != "bea" || !strings.HasPrefix(fed[0].OtherTrust, "General Hospital [") {
		t.Fatalf("federated: %+v", fed)
	}
	var dir []node.StaffInfo
	asha.getJSON(t, "/api/v1/directory", &dir)
	if slices.ContainsFunc(dir, func(s node.StaffInfo) bool { return s.PeerID == bea.ID.String() }) {
		t.Fatal("bea is in asha's directory")
	}
	asha.must(t, http.StatusUnprocessableEntity, "POST", "/api/v1/conversations", `{"title":"x","members":["bea"]}`)

	testnet.Eventually(t, within, "asha holds bea's prekey", func() bool {
		r, err := asha.N.Recipient(bea.ID, time.Now())
		return err == nil && r.PrekeyID != 0
	})
	out := asha.must(t, http.StatusCreated, "POST", "/api/v1/conversations", `{"title":"joint clinic","members":["`+bea.ID.String()+`"]}`)
	id, err := chat.ParseConversationID(out["id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, within, "bea lists the conversation", func() bool {
		sum := bea.listed(t, id)
		return sum != nil && len(memberList(sum, "members")) == 2
	})
	asha.must(t, http.StatusCreated, "POST", convPath(id)+"/messages", `{"text":"hello B"}`)
	testnet.Eventually(t, within, "bea reads it", func() bool { return slices.Contains(testnet.Texts(bea.Peer, id), "hello B") })
	bea.must(t, http.StatusCreated, "POST", convPath(id)+"/messages", `{"text":"hello A"}`)
	testnet.Eventually(t, within, "asha reads it", func() bool { return slices.Contains(testnet.Texts(asha.Peer, id), "hello A") })
	// Bea cannot add anyone, nor be made an admin.
	if code, _ := bea.call(t, "POST", convPath(id)+"/members", `{"add":["`+asha.ID.String()+`"]}`); code < 400 {
		t.Fatalf("bea adds a member: %d", code)
	}
	if code, _ := asha.call(t, "POST", convPath(id)+"/members", `{"promote":["`+bea.ID.String()+`"]}`); code < 400 {
		t.Fatalf("asha promotes bea: %d", code)
	}
}
