package archive_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/medmesh/medmesh/archive"
	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/fhir"
	"github.com/medmesh/medmesh/internal/fhirschema"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/media"
	"github.com/medmesh/medmesh/patient"
)

const within = 30 * time.Second

// versions maps each filed message to its filed versions' statuses and texts.
func versions(t *testing.T, f *archive.Filer, id chat.ConversationID) map[crdt.OpID][]archive.Record {
	t.Helper()
	recs, err := f.Filed(id)
	if err != nil {
		t.Fatal(err)
	}
	out := map[crdt.OpID][]archive.Record{}
	for _, r := range recs {
		out[r.Message] = append(out[r.Message], r)
	}
	return out
}

// TestArchiveFiles: an archive device (certificate role archive) added to
// a conversation about a patient, visibly — its colleagues' directories
// show the role — files each message as it arrives: an edit files a new
// version, a delete after filing files one marked entered-in-error that
// keeps what was filed, a patient correction files new versions with the
// corrected patient; its FHIR export validates against the R4 schema and
// says all of that. A member's device files nothing.
func TestArchiveFiles(t *testing.T) {
	defer goleak.VerifyNone(t, testnet.LeakOptions()...)
	ca := testnet.NewCA(t)
	asha := testnet.Start(t, ca, ca.Enrol(t, "asha"))
	bola := testnet.Start(t, ca, ca.Enrol(t, "bola"), testnet.Boot(asha))
	rec := testnet.Start(t, ca, ca.Enrol(t, "records", archive.Role), testnet.Boot(asha))
	defer func() { rec.Stop(); bola.Stop(); asha.Stop() }()
	testnet.Knows(t, asha, bola, rec)
	if asha.D.Filer() != nil || rec.D.Filer() == nil {
		t.Fatal("only the archive device files")
	}
	if s, ok := asha.N.LookupStaff(rec.ID.String()); !ok || !s.HasRole(archive.Role) {
		t.Fatal("members do not see that the archive is one")
	}

	jane, _ := patient.New("943 476 5919", "Jane Doe", "1950-03-14", time.Now())
	id, err := asha.C.CreateAbout("Bay 3", []peer.ID{bola.ID, rec.ID}, &jane)
	if err != nil {
		t.Fatal(err)
	}
	hello := testnet.Send(t, asha, id, "K+ 6.1 in bay 3")
	var raw bytes.Buffer
	png.Encode(&raw, image.NewGray(image.Rect(0, 0, 120, 80)))
	full, thumb, err := media.Prepare(raw.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	photo, err := asha.C.SendPhoto(id, full, thumb, "wrong patient's strip")
	if err != nil {
		t.Fatal(err)
	}
	var urgent crdt.OpID
	testnet.Eventually(t, within, "bola can answer", func() bool { // once she holds the conversation and its keys
		urgent, err = bola.C.Send(id, "ECG now?", chat.SendOptions{Urgent: true, ReplyTo: hello})
		return err == nil
	})
	f := rec.D.Filer()
	testnet.Eventually(t, within, "the archive files all three, the photo whole", func() bool {
		v := versions(t, f, id)
		return len(v) == 3 && len(v[photo]) == 1 && !v[photo][0].PhotoThumb && bytes.Equal(v[photo][0].Photo, full)
	})

	if err := asha.C.Edit(id, hello, "K+ 6.4 in bay 3 (repeat)"); err != nil {
		t.Fatal(err)
	}
	if err := asha.C.Delete(id, photo); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, within, "the archive files the edit and the delete", func() bool {
		v := versions(t, f, id)
		h, p := v[hello], v[photo]
		return len(h) == 2 && h[1].Text == "K+ 6.4 in bay 3 (repeat)" && h[0].Text == "K+ 6.1 in bay 3" &&
			len(p) == 2 && p[1].Status == archive.StatusEnteredInError && bytes.Equal(p[1].Photo, full)
	})

	john, _ := patient.New("401 023 2137", "John Roe", "", time.Now())
	if _, err := bola.C.SetPatient(id, &john); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, within, "the archive files the corrected patient", func() bool {
		v := versions(t, f, id)
		for _, m := range []crdt.OpID{hello, urgent} {
			l := v[m][len(v[m])-1]
			if l.Patient == nil || l.Patient.NHSNumber != john.NHSNumber {
				return false
			}
		}
		p := v[photo]
		return len(p) == 2 // entered in error: not filed again
	})

	// What the archive's operator exports.
	recs, err := f.Filed(id)
	if err != nil {
		t.Fatal(err)
	}
	out, err := fhir.FromFiled(id, recs, rec.N).Export(fhir.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := fhirschema.Validate(out); err != nil {
		t.Fatalf("the archive's bundle fails the FHIR R4 schema: %v", err)
	}
	var b struct {
		Entry []struct {
			Resource map[string]any `json:"resource"`
		}
	}
	json.Unmarshal(out, &b)
	status := map[string]string{}
	var nhs []string
	for _, e := range b.Entry {
		r := e.Resource
		switch r["resourceType"] {
		case "Communication":
			if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(r["received"])); err != nil {
				t.Fatalf("a filed communication's received (when the archive filed it) %v: %v", r["received"], err)
			}
			ver := r["meta"].(map[string]any)["versionId"].(string)
			id := r["identifier"].([]any)[0].(map[string]any)["value"].(string)
			status[id] = r["status"].(string) + "/v" + ver
		case "Patient":
			nhs = append(nhs, r["identifier"].([]any)[0].(map[string]any)["value"].(string))
		}
	}
	want := map[string]string{hello.String(): "completed/v3", photo.String(): "entered-in-error/v2", urgent.String(): "completed/v2"}
	for k, v := range want {
		if status[k] != v {
			t.Fatalf("filed statuses %v, want %v", status, want)
		}
	}
	if !slices.Equal(nhs, []string{"4010232137"}) {
		t.Fatalf("patients %v", nhs)
	}
	if strings.Contains(string(out), "Jane") {
		t.Fatal("the corrected export still names the wrong patient")
	}
}
