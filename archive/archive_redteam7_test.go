package archive_test

import (
	"bytes"
	"image"
	"image/png"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/archive"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/fhir"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/media"
	"github.com/medmesh/medmesh/patient"
)

// TestRedteam7PatientFlipsMultiplyFiledPhotos — attack: a malicious (or
// just admitted) member who is NOT an admin flips the conversation's
// patient back and forth (chat lets any member set the patient: kindPatient
// is authorised like a text). Each flip is one small op (~200 bytes), but
// the archive files a new version of EVERY filed message of everyone,
// each version a full copy of the record — the whole photo included
// (Filer.File: latest(...) with its photo, Version++, put). Nothing bounds
// versions per message, copies per photo, or bytes per conversation or per
// sender. Impact: with K flips and P bytes of photos in the conversation
// the archive stores K×P bytes of sealed records (a colleague's one 8 MiB
// photo and 1000 flips = 8 GB), exhausting the trust's archive store
// from a few hundred KB of ops — the "filing cannot be used to exhaust
// the archive (bounded)" guarantee does not hold. The same amplification
// works through edits of a photo's caption by its sender.
func TestRedteam7PatientFlipsMultiplyFiledPhotos(t *testing.T) {
	ca := testnet.NewCA(t)
	asha := testnet.Start(t, ca, ca.Enrol(t, "asha"))
	mallory := testnet.Start(t, ca, ca.Enrol(t, "mallory"), testnet.Boot(asha))
	rec := testnet.Start(t, ca, ca.Enrol(t, "records", archive.Role), testnet.Boot(asha))
	defer func() { rec.Stop(); mallory.Stop(); asha.Stop() }()
	testnet.Knows(t, asha, mallory, rec)

	jane, _ := patient.New("943 476 5919", "Jane Doe", "1950-03-14", time.Now())
	john, _ := patient.New("401 023 2137", "John Roe", "", time.Now())
	id, err := asha.C.CreateAbout("Bay 3", []peer.ID{mallory.ID, rec.ID}, &jane)
	if err != nil {
		t.Fatal(err)
	}
	// Asha's photo: a noisy image, so the stored JPEG is large.
	img := image.NewRGBA(image.Rect(0, 0, 1024, 768))
	r := rand.New(rand.NewPCG(1, 2))
	for i := range img.Pix {
		img.Pix[i] = byte(r.Uint32())
	}
	var raw bytes.Buffer
	png.Encode(&raw, img)
	full, thumb, err := media.Prepare(raw.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	photo, err := asha.C.SendPhoto(id, full, thumb, "wound, day 3")
	if err != nil {
		t.Fatal(err)
	}
	f := rec.D.Filer()
	testnet.Eventually(t, within, "the archive files the whole photo", func() bool {
		v := versions(t, f, id)
		return len(v[photo]) == 1 && !v[photo][0].PhotoThumb
	})
	testnet.Eventually(t, within, "mallory holds the conversation", func() bool { _, err := mallory.C.Conversation(id); return err == nil })

	const flips = 10
	for i := range flips {
		p := &john
		if i%2 == 1 {
			p = &jane
		}
		testnet.Eventually(t, within, "mallory sets the patient", func() bool { _, err := mallory.C.SetPatient(id, p); return err == nil })
		testnet.Eventually(t, within, "the archive files the flip", func() bool {
			v := versions(t, f, id)[photo]
			return len(v) > 0 && v[len(v)-1].Patient != nil && v[len(v)-1].Patient.NHSNumber == p.NHSNumber
		})
	}
	var stored int
	v := versions(t, f, id)[photo]
	for _, r := range v {
		stored += len(r.Photo)
	}
	if stored > 3*len(full) {
		t.Fatalf("%d patient flips by a non-admin member made the archive file asha's %d-byte photo %d times (%d bytes): unbounded amplification",
			flips, len(full), len(v), stored)
	}
}

// TestRedteam7EmptyPhotoStopsFiling — attack: a malicious member (her
// device calls the conversations API directly: SendPhoto with an empty
// image) posts a photo op that names no chunks. chat shows it as a photo
// whose full image is Ready (photoReady is true for zero chunks) but
// PhotoData refuses it (ErrNoSuchMessage for zero chunks). The filer asks
// for the full image, gets the error, and File returns at that message —
// so no message after it in the conversation is ever filed: every sweep
// and every event fails at the same place (a Warn in the log is all).
// The same error aborts every member's FHIR export of the conversation.
// Impact: one op from one member silently stops the archive keeping the
// record of a clinical conversation — colleagues keep messaging, believing
// it is filed (the archive is a visible member) — and makes the
// conversation unexportable everywhere.
func TestRedteam7EmptyPhotoStopsFiling(t *testing.T) {
	ca := testnet.NewCA(t)
	asha := testnet.Start(t, ca, ca.Enrol(t, "asha"))
	mallory := testnet.Start(t, ca, ca.Enrol(t, "mallory"), testnet.Boot(asha))
	rec := testnet.Start(t, ca, ca.Enrol(t, "records", archive.Role), testnet.Boot(asha))
	defer func() { rec.Stop(); mallory.Stop(); asha.Stop() }()
	testnet.Knows(t, asha, mallory, rec)

	jane, _ := patient.New("943 476 5919", "Jane Doe", "1950-03-14", time.Now())
	id, err := asha.C.CreateAbout("Bay 3", []peer.ID{mallory.ID, rec.ID}, &jane)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Send(t, asha, id, "K+ 6.1 in bay 3")
	var bad crdt.OpID
	testnet.Eventually(t, within, "mallory posts her empty photo", func() bool {
		bad, err = mallory.C.SendPhoto(id, nil, nil, "")
		return err == nil
	})
	testnet.Eventually(t, within, "asha holds mallory's photo", func() bool {
		ms, _ := asha.C.Messages(id)
		for _, m := range ms {
			if m.ID == bad {
				return true
			}
		}
		return false
	})
	later := testnet.Send(t, asha, id, "ECG: peaked T waves, calcium given")
	testnet.Eventually(t, within, "the archive's replica holds asha's later message", func() bool {
		ms, _ := rec.C.Messages(id)
		for _, m := range ms {
			if m.ID == later && m.Text != "" {
				return true
			}
		}
		return false
	})

	f := rec.D.Filer()
	ferr := f.File(id) // what every event and sweep does
	_, xerr := fhir.Export(asha.C, asha.N, id, fhir.Options{})
	if v := versions(t, f, id); len(v[later]) == 0 || ferr != nil || xerr != nil {
		t.Fatalf("after mallory's empty photo the archive files nothing more (later message filed: %v, File: %v) and asha's FHIR export fails: %v",
			len(v[later]) > 0, ferr, xerr)
	}
}
