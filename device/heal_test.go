package device_test

import (
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/patient"
)

// Across a partition, one admin adds a member while another removes one
// and corrects the patient. Once they meet again, with nobody sending, the
// new member shows the same patient as everyone else: a device rekeys
// with history by itself (chat.Replica.Heal), giving it the key of the
// other admin's epoch.
func TestConcurrentAddAndRekeyHealsWithoutASend(t *testing.T) {
	jane := patient.Patient{NHSNumber: "9434765919", Name: "Jane Doe", BirthDate: "1950-03-14"}
	john := patient.Patient{NHSNumber: "4010232137", Name: "John Roe", BirthDate: "1962-07-01"}
	c := testnet.NewCA(t)
	a := testnet.Start(t, c, c.Enrol(t, "alice"))
	b := testnet.Start(t, c, c.Enrol(t, "bob"), testnet.Boot(a))
	cc := testnet.Start(t, c, c.Enrol(t, "carol"), testnet.Boot(a))
	d := testnet.Start(t, c, c.Enrol(t, "dave"), testnet.Boot(a))
	testnet.Knows(t, a, b, cc, d)
	testnet.Knows(t, b, a, cc, d)
	id, err := a.C.CreateAbout("Bay 3", []peer.ID{b.ID, cc.ID}, &jane)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, "joined", func() bool { return testnet.Joined(b, id, 3) && testnet.Joined(cc, id, 3) })
	if err := a.C.Promote(id, b.ID); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, "bob is an admin", func() bool {
		st, err := b.C.State(id)
		return err == nil && slices.Contains(st.Admins, b.ID)
	})

	b.N.SetOffline(true)
	if err := a.C.Add(id, d.ID); err != nil {
		t.Fatal(err)
	}
	if err := b.C.Remove(id, cc.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.C.SetPatient(id, &john); err != nil {
		t.Fatal(err)
	}
	b.N.SetOffline(false)

	shows := func(p *testnet.Peer) patient.NHSNumber {
		st, err := p.C.State(id)
		if err != nil || st.Patient == nil {
			return ""
		}
		return st.Patient.NHSNumber
	}
	testnet.Eventually(t, 60*time.Second, "every member, dave too, shows the corrected patient", func() bool {
		return shows(a) == john.NHSNumber && shows(b) == john.NHSNumber && shows(d) == john.NHSNumber
	})
}
