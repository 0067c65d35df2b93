package rota

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
)

const site = "north"

var t0 = time.Date(2026, 11, 30, 20, 0, 0, 0, time.UTC)

// person is a test colleague: a device key and a certificate's roles.
type person struct {
	key ed25519.PrivateKey
	id  peer.ID
	m   Member
}

func newPerson(t testing.TB, name string, roles ...string) *person {
	t.Helper()
	seed := sha256.Sum256([]byte(name))
	key := ed25519.NewKeyFromSeed(seed[:])
	id, err := identity.PeerIDFromKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return &person{key: key, id: id, m: Member{Name: name, StaffID: "S-" + name, Site: site, Roles: roles}}
}

// dir is a test Authority: the colleagues it knows, minus the revoked.
type dir struct {
	known   map[peer.ID]Member
	revoked map[peer.ID]bool
}

func newDir(ps ...*person) *dir {
	d := &dir{known: map[peer.ID]Member{}, revoked: map[peer.ID]bool{}}
	for _, p := range ps {
		d.known[p.id] = p.m
	}
	return d
}

func (d *dir) Member(id peer.ID) (Member, bool) {
	m, ok := d.known[id]
	return m, ok && !d.revoked[id]
}

func (p *person) sign(t testing.TB, d Draft) *Op {
	t.Helper()
	if d.Site == "" {
		d.Site = site
	}
	if d.Time.IsZero() {
		d.Time = t0
	}
	o, err := Sign(p.key, d)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func (p *person) define(t testing.TB, id RoleID, seq uint64, requires string, chain ...RoleID) *Op {
	return p.sign(t, Draft{Kind: KindDefine, Role: id, Seq: seq, Name: fmt.Sprintf("%s on call", id), Requires: requires, Chain: chain})
}

func (p *person) take(t testing.TB, id RoleID, at time.Duration, seen ...OpID) *Op {
	return p.sign(t, Draft{Kind: KindTake, Role: id, Time: t0.Add(at), Seen: seen})
}

func mustAdd(t testing.TB, r *Rota, auth Authority, ops ...*Op) {
	t.Helper()
	for _, o := range ops {
		if _, err := r.Add(o, auth); err != nil {
			t.Fatalf("add %s of %s: %v", o.Kind, o.Role, err)
		}
	}
}

func holders(v Role) []peer.ID {
	var out []peer.ID
	for _, h := range v.Holders {
		out = append(out, h.PeerID)
	}
	return out
}

func mustRole(t testing.TB, r *Rota, auth Authority, id RoleID) Role {
	t.Helper()
	v, ok := r.Role(id, auth)
	if !ok {
		t.Fatalf("role %s not in view", id)
	}
	return v
}

// resign replaces raw's signature with one by p's key, keeping the body
// (and so the signer it names).
func resign(t testing.TB, p *person, raw []byte, _ peer.ID) []byte {
	t.Helper()
	var r record
	if err := detcbor.Unmarshal(raw, &r, MaxOpSize); err != nil {
		t.Fatal(err)
	}
	r.Sig = ed25519.Sign(p.key, append([]byte(Domain), r.Body...))
	out, err := detcbor.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dumpOps logs ops briefly, for a failing property test.
func dumpOps(t *testing.T, all []*Op, names map[string]string) {
	for _, o := range all {
		var seen []string
		for _, s := range o.Seen {
			seen = append(seen, s.String()[:4])
		}
		t.Logf("%s %s role=%s signer=%s to=%s t=%s seen=%v", o.ID.String()[:4], o.Kind, o.Role, names[string(o.Signer)], names[string(o.To)], o.Time.Format("05"), seen)
	}
}
