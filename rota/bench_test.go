package rota

import (
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"
)

// BenchmarkAdd: taking in one signed op (decode, verify, add, compact) on
// a full-size rota, beside one Ed25519 verification of the same op's
// size measured in the same run (the floor: verification dominates).
func BenchmarkAdd(b *testing.B) {
	admin := newPerson(b, "admin", AdminRole)
	staff := make([]*person, 16)
	for i := range staff {
		staff[i] = newPerson(b, fmt.Sprintf("reg%d", i), "reg")
	}
	auth := newDir(append(staff, admin)...)
	r := New(site)
	for i := range MaxRoles {
		mustAdd(b, r, auth, admin.define(b, RoleID(fmt.Sprintf("role-%d", i)), 1, "reg"))
	}
	ops := make([][]byte, 4096)
	for i := range ops {
		p := staff[i%len(staff)]
		ops[i] = p.take(b, RoleID(fmt.Sprintf("role-%d", i%MaxRoles)), time.Duration(i)*time.Second).Raw()
	}
	msg := make([]byte, len(ops[0]))
	sig := ed25519.Sign(admin.key, msg)
	pub := admin.key.Public().(ed25519.PublicKey)
	start := time.Now()
	const verifies = 2000
	for range verifies {
		ed25519.Verify(pub, msg, sig)
	}
	verify := time.Since(start) / verifies
	b.ResetTimer()
	for i := range b.N {
		o, err := Decode(ops[i%len(ops)])
		if err != nil {
			b.Fatal(err)
		}
		r.Add(o, auth) //nolint:errcheck
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(per.Nanoseconds())/float64(verify.Nanoseconds()), "x_verify")
}

// BenchmarkView: the rota's view of a full site (64 roles, each split
// between two holders), beside one Ed25519 verification.
func BenchmarkView(b *testing.B) {
	admin := newPerson(b, "admin", AdminRole)
	ann, bob := newPerson(b, "ann", "reg"), newPerson(b, "bob", "reg")
	auth := newDir(admin, ann, bob)
	r := New(site)
	for i := range MaxRoles {
		id := RoleID(fmt.Sprintf("role-%d", i))
		mustAdd(b, r, auth, admin.define(b, id, 1, "reg"), ann.take(b, id, 0), bob.take(b, id, time.Second))
	}
	msg := make([]byte, 256)
	sig := ed25519.Sign(admin.key, msg)
	pub := admin.key.Public().(ed25519.PublicKey)
	start := time.Now()
	for range 2000 {
		ed25519.Verify(pub, msg, sig)
	}
	verify := time.Since(start) / 2000
	b.ResetTimer()
	for range b.N {
		if v := r.View(auth); len(v) != MaxRoles || !v[0].Split {
			b.Fatal("view")
		}
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(per.Nanoseconds())/float64(verify.Nanoseconds()), "x_verify")
}
