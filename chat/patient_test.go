package chat

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/patient"
)

var (
	jane = patient.Patient{NHSNumber: "9434765919", Name: "Jane Doe", BirthDate: "1950-03-14"}
	john = patient.Patient{NHSNumber: "4010232137", Name: "John Roe", BirthDate: "1962-07-01"}
	zoe  = patient.Patient{NHSNumber: "4505577104", Name: "Zoë Ng"}
)

// noPatientBytes fails if any envelope holds a patient's NHS number or name
// in the clear.
func noPatientBytes(t *testing.T, envs [][]byte, ps ...patient.Patient) {
	t.Helper()
	for _, e := range envs {
		for _, p := range ps {
			for _, s := range []string{string(p.NHSNumber), p.NHSNumber.String(), p.Name} {
				if bytes.Contains(e, []byte(s)) {
					t.Fatalf("an envelope carries %q in the clear", s)
				}
			}
		}
	}
}

func patientOf(r *Replica) *patient.Patient { return r.State().Patient }

func TestPatientSetCorrectClear(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("ward", alice, bob))
	ok := must[crdt.OpID](t)

	envs, _ := ok(split(ra.SetPatient(&jane)))
	noPatientBytes(t, envs, jane)
	deliver(t, envs, rb)
	for _, r := range []*Replica{ra, rb} {
		if st := r.State(); st.Patient == nil || *st.Patient != jane || st.PatientBy != alice.ID {
			t.Fatalf("patient after set: %+v by %s", st.Patient, st.PatientBy)
		}
	}
	// Any member corrects it, not only the admin who set it.
	envs, _ = ok(split(rb.SetPatient(&john)))
	noPatientBytes(t, envs, john)
	deliver(t, envs, ra)
	for _, r := range []*Replica{ra, rb} {
		if st := r.State(); st.Patient == nil || *st.Patient != john || st.PatientBy != bob.ID {
			t.Fatalf("patient after correction: %+v by %s", st.Patient, st.PatientBy)
		}
	}
	envs, _ = ok(split(ra.SetPatient(nil)))
	deliver(t, envs, rb)
	if patientOf(ra) != nil || patientOf(rb) != nil {
		t.Fatal("cleared link still shown")
	}
	// An invalid patient is refused before anything is made.
	bad := patient.Patient{NHSNumber: "9434765918", Name: "Jane Doe"}
	if out, err := ra.SetPatient(&bad); !errors.Is(err, ErrInvalidPayload) || !errors.Is(err, patient.ErrNHSCheckDigit) || len(out.Envelopes) != 0 {
		t.Fatalf("invalid NHS number: %v, %d envelopes", err, len(out.Envelopes))
	}
}

// TestPatientConcurrentCorrections: two members correct the patient at
// the same time; every replica, taking the ops in either order, shows the
// same one — the later in the conversation's order — and a correction made
// after seeing another always wins over it, whatever the clocks say.
func TestPatientConcurrentCorrections(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("ward", alice, bob, carol))
	// dave holds a fourth replica and takes the two corrections the
	// other way round from carol.
	dave := w.join(carol, ra.Tag())
	ok := must[crdt.OpID](t)
	first, _ := ok(split(ra.SetPatient(&jane)))
	deliver(t, first, rb, rc)
	all := history(ra)

	ea, ia := ok(split(ra.SetPatient(&john)))
	w.now = w.now.Add(time.Second)
	other := patient.Patient{NHSNumber: "4857773457", Name: "Ann Poe"}
	eb, ib := ok(split(rb.SetPatient(&other)))
	deliver(t, eb, ra)
	deliver(t, ea, rb)
	deliver(t, slices.Concat(eb, ea), rc)
	deliver(t, slices.Concat(all, ea, eb), dave)
	want := patientOf(ra)
	for i, r := range []*Replica{rb, rc, dave} {
		if got := patientOf(r); got == nil || want == nil || *got != *want {
			t.Fatalf("replica %d shows %+v, alice %+v", i+1, got, want)
		}
	}
	// The winner is the later of the two in the conversation's order.
	ord := ra.dag.Order()
	if (slices.Index(ord, ia) > slices.Index(ord, ib)) != (*want == john) {
		t.Fatalf("winner %+v is not the later op in the order", want)
	}

	// A correction that saw both wins, even from a device whose clock is
	// an hour behind.
	w.now = w.now.Add(-time.Hour)
	ec, _ := ok(split(rc.SetPatient(&zoe)))
	w.now = w.now.Add(time.Hour)
	deliver(t, ec, ra, rb)
	for i, r := range []*Replica{ra, rb, rc} {
		if got := patientOf(r); got == nil || *got != zoe {
			t.Fatalf("replica %d shows %+v after a later correction", i, got)
		}
	}
}

// TestPatientNewMemberReadsIt: a colleague added later reads the patient
// set before it joined (control keys come with its welcome as history).
func TestPatientNewMemberReadsIt(t *testing.T) {
	w := newWorld(t)
	alice, bob, dan := w.device("alice"), w.device("bob"), w.device("dan")
	ra, rb := unpack2(w.group("ward", alice, bob))
	pool := ok2(t)(ra.SetPatient(&jane))
	pool = append(pool, ok2(t)(ra.Add(dan.ID))...)
	deliver(t, pool, rb)
	rd := w.join(dan, ra.Tag())
	all := history(ra)
	deliver(t, all, rd)
	deliver(t, all, rd) // a second pass for anything that opened late
	if got := patientOf(rd); got == nil || *got != jane {
		t.Fatalf("new member sees patient %+v", got)
	}
}

// ok2 gives a command's envelopes, failing the test on its error.
func ok2(t *testing.T) func(Out, error) [][]byte {
	return func(o Out, err error) [][]byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return o.Envelopes
	}
}

// history is every envelope r holds, dependencies first.
func history(r *Replica) [][]byte {
	ids := r.IDs()
	r.SortCausal(ids)
	var out [][]byte
	for _, id := range ids {
		if raw, ok := r.Envelope(id); ok {
			out = append(out, raw)
		}
	}
	return out
}

// TestPatientRemovedMemberGetsNoCorrection: after its removal a member
// holds every later envelope and reads none of them: the patient it shows
// stays the one it last could read, and it cannot set one itself.
func TestPatientRemovedMemberGetsNoCorrection(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("ward", alice, bob, carol))
	pool := ok2(t)(ra.SetPatient(&jane))
	deliver(t, pool, rb, rc)
	rm := ok2(t)(ra.Remove(carol.ID))
	deliver(t, rm, rb, rc)
	fix := ok2(t)(rb.SetPatient(&john)) // a member, not the admin, corrects
	deliver(t, fix, ra, rc)
	if got := patientOf(ra); got == nil || *got != john {
		t.Fatalf("alice shows %+v", got)
	}
	if got := patientOf(rc); got == nil || *got != jane {
		t.Fatalf("removed carol shows %+v after a later correction", got)
	}
	id := idOf(fix[len(fix)-1])
	if info := rc.ops[id]; info == nil || info.p != nil {
		t.Fatal("removed member opened the correction (or never held it)")
	}
	if _, err := rc.SetPatient(&john); !errors.Is(err, ErrNotMember) {
		t.Fatalf("removed member sets the patient: %v", err)
	}
}

// TestPatientForgedOp: a member that skips SetPatient's checks and seals
// a patient with a wrong check digit, or a patient on another kind of op,
// changes nothing on other replicas.
func TestPatientForgedOp(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("ward", alice, bob))
	deliver(t, ok2(t)(ra.SetPatient(&jane)), rb)
	forge := func(p *payload) []byte {
		t.Helper()
		pt, err := detcbor.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		env := rb.newEnvelope()
		ep, ok := rb.controlEpoch(rb.headView())
		if !ok {
			t.Fatal("no control epoch")
		}
		if err := e2e.SealControl(env, ep, rb.control[ep], pt); err != nil {
			t.Fatal(err)
		}
		raw, err := rb.signed(env)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	for i, p := range []*payload{
		{Kind: kindPatient, Patient: &patientBody{NHS: "9434765918", Name: "Evil"}},
		{Kind: kindPatient, Patient: &patientBody{NHS: "943 476 5919"}},
		{Kind: kindPatient, Patient: &patientBody{NHS: "4010232137", Birth: "1950-02-30"}},
		{Kind: kindRetention, Patient: &patientBody{NHS: "4010232137"}},
	} {
		raw := forge(p)
		if err := ra.Receive(raw); err != nil && !benign(err) && !errors.Is(err, ErrInvalidPayload) {
			t.Fatalf("forged op %d: %v", i, err)
		}
		if got := patientOf(ra); got == nil || *got != jane {
			t.Fatalf("forged op %d changed the patient to %+v", i, got)
		}
	}
}

// TestPatientConvergence: members set, correct and clear the patient
// while messages flow, envelopes are delivered partially, duplicated and
// out of order, and an outsider is added and removed; once all is
// delivered every replica shows the same patient — that of the last
// valid patient op in the conversation's order.
func TestPatientConvergence(t *testing.T) {
	for seed := range uint64(30) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { patientConvergence(t, seed) })
	}
}

func patientConvergence(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 17))
	w := newWorld(t)
	devs := []*Device{w.device("a"), w.device("b"), w.device("c")}
	x := w.device("x")
	r0, envs := w.create(devs[0], "ward", devs[1], devs[2])
	reps := []*Replica{r0, w.join(devs[1], r0.Tag()), w.join(devs[2], r0.Tag())}
	pool := slices.Clone(envs)
	deliverAll(t, pool, reps[1:]...)
	people := []*patient.Patient{&jane, &john, nil, &zoe}
	for step := range 60 {
		w.now = w.now.Add(time.Duration(rng.IntN(5000)) * time.Millisecond)
		r := reps[rng.IntN(len(reps))]
		var out Out
		var err error
		switch rng.IntN(6) {
		case 0, 1, 2:
			out, err = r.SetPatient(people[rng.IntN(len(people))])
		case 3:
			out, err = r.Send(fmt.Sprint("m", step), SendOptions{})
		case 4:
			out, err = r.Add(x.ID)
		case 5:
			out, err = r.Remove(x.ID)
		}
		if err != nil && !errors.Is(err, ErrNotAuthorised) {
			t.Fatalf("step %d: %v", step, err)
		}
		pool = append(pool, out.Envelopes...)
		for _, o := range reps {
			if o != r {
				for range rng.IntN(4) {
					if err := o.Receive(pool[rng.IntN(len(pool))]); err != nil && !benign(err) {
						t.Fatalf("step %d: %v", step, err)
					}
				}
			}
		}
	}
	for _, r := range reps {
		order := slices.Clone(pool)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		deliverAll(t, append(order, order[:len(order)/2]...), r)
	}
	want := canon(reps[0].State())
	for i, r := range reps[1:] {
		if got := canon(r.State()); !reflect.DeepEqual(got, want) {
			t.Fatalf("replica %d diverged: %+v vs %+v", i+1, got.Patient, want.Patient)
		}
	}
	// The rule: the last valid patient op in the order.
	var last *patient.Patient
	for _, id := range r0.dag.Order() {
		if info := r0.ops[id]; info != nil && info.valid && info.kind == kindPatient {
			last = nil
			if info.p.Patient != nil {
				p := info.p.Patient.patient()
				last = &p
			}
		}
	}
	if !reflect.DeepEqual(last, r0.State().Patient) {
		t.Fatalf("patient %+v is not the last op's %+v", r0.State().Patient, last)
	}
	noPatientBytes(t, pool, jane, john)
}
