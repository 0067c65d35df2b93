package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/png"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/archive"
	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/fhir"
	"github.com/medmesh/medmesh/internal/check"
	"github.com/medmesh/medmesh/internal/fhirschema"
	"github.com/medmesh/medmesh/media"
	"github.com/medmesh/medmesh/patient"
)

// openDir runs the device in dir on loopback (no mDNS), bootstrapped to boot.
func openDir(t *testing.T, e *env, dir string, boot ...*device.Device) *device.Device {
	t.Helper()
	var infos []peer.AddrInfo
	for _, b := range boot {
		infos = append(infos, peer.AddrInfo{ID: b.ID(), Addrs: b.Node().Host().Addrs()})
	}
	d, err := device.Open(context.Background(), dir, []byte(e.getenv(envDevicePass)),
		device.WithListen("/ip4/127.0.0.1/tcp/0"), device.WithMDNS(false), device.WithBootstrap(infos...),
		device.WithKDF(*e.kdf), device.WithLogger(slog.New(slog.DiscardHandler)), device.WithTimers(time.Second, 0))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestExportFHIR: two enrolled device directories hold a conversation
// about a patient — a text, an urgent reply, a photo, an edit, a delete;
// with both devices stopped, `medmesh export fhir` on the recipient's
// directory writes a FHIR R4 bundle (mode 0600) that validates against
// the R4 schema and holds what the recipient saw, the Practitioners'
// staff IDs and registrations from their certificates, and no deleted
// message; --messages selects; nothing about the patient is printed.
func TestExportFHIR(t *testing.T) {
	root := t.TempDir()
	var out bytes.Buffer
	e := testEnv(&out)
	ca, devA, devB, devR := filepath.Join(root, "ca"), filepath.Join(root, "asha"), filepath.Join(root, "bola"), filepath.Join(root, "records")
	cli(t, e, "ca", "init", "--dir", ca, "--name", "General Hospital")
	cli(t, e, "init", "--dir", devA, "--name", "Dr Asha Patel", "--staff-id", "A100", "--registration", "GMC 7654321", "--ca", filepath.Join(ca, "ca.crt"))
	cli(t, e, "init", "--dir", devB, "--name", "Bola Ade", "--staff-id", "B200", "--registration", "NMC 12A3456B", "--ca", filepath.Join(ca, "ca.crt"))
	cli(t, e, "init", "--dir", devR, "--name", "Records", "--staff-id", "R1", "--ca", filepath.Join(ca, "ca.crt"))
	for _, d := range []string{devA, devB} {
		cli(t, e, "ca", "sign", "--dir", ca, "--csr", filepath.Join(d, "device.csr"), "--out", filepath.Join(d, "device.crt"))
	}
	cli(t, e, "ca", "sign", "--dir", ca, "--csr", filepath.Join(devR, "device.csr"), "--out", filepath.Join(devR, "device.crt"), "--roles", archive.Role)

	a := openDir(t, e, devA)
	b := openDir(t, e, devB, a)
	r := openDir(t, e, devR, a)
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			r.Close()
			b.Close()
			a.Close()
		}
	}
	t.Cleanup(stop)
	for _, o := range []*device.Device{b, r} {
		check.Eventually(t, 20*time.Second, "asha can seal to her colleagues", func() bool {
			_, err := a.Node().Recipient(o.ID(), time.Now())
			return err == nil
		})
	}
	jane, err := patient.New("943 476 5919", "Jane Doe", "1950-03-14", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ac := a.Conversations()
	id, err := ac.CreateAbout("Bay 3", []peer.ID{b.ID(), r.ID()}, &jane)
	if err != nil {
		t.Fatal(err)
	}
	send := func(text string, o chat.SendOptions) crdt.OpID {
		t.Helper()
		op, err := ac.Send(id, text, o)
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	hello := send("K+ 6.1 in bay 3", chat.SendOptions{})
	urgent := send("ECG now please", chat.SendOptions{Urgent: true, ReplyTo: hello})
	edited := send("calcium gluconate 10 ml given", chat.SendOptions{})
	deleted := send("wrong bed, ignore", chat.SendOptions{})
	var raw bytes.Buffer
	png.Encode(&raw, image.NewGray(image.Rect(0, 0, 200, 120)))
	full, thumb, err := media.Prepare(raw.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	photo, err := ac.SendPhoto(id, full, thumb, "rhythm strip")
	if err != nil {
		t.Fatal(err)
	}
	if err := ac.Edit(id, edited, "calcium gluconate 30 ml given"); err != nil {
		t.Fatal(err)
	}
	if err := ac.Delete(id, deleted); err != nil {
		t.Fatal(err)
	}
	check.Eventually(t, 30*time.Second, "bola holds all of it", func() bool {
		msgs, err := b.Conversations().Messages(id)
		if err != nil || len(msgs) != 5 {
			return false
		}
		for _, m := range msgs {
			switch {
			case m.ID == photo && (m.Photo == nil || !m.Photo.Ready()),
				m.ID == edited && m.Text != "calcium gluconate 30 ml given",
				m.ID == deleted && !m.Deleted:
				return false
			}
		}
		return true
	})
	check.Eventually(t, 30*time.Second, "the archive files the four standing messages", func() bool {
		recs, err := r.Filer().Filed(id)
		filed := map[crdt.OpID]bool{}
		for _, rc := range recs {
			if rc.Status == archive.StatusCompleted && (rc.Message != edited || rc.Text == "calcium gluconate 30 ml given") &&
				(rc.Message != photo || !rc.PhotoThumb) {
				filed[rc.Message] = true
			}
		}
		return err == nil && filed[hello] && filed[urgent] && filed[edited] && filed[photo]
	})
	stop()

	// The archive's operator exports what it filed: the deleted message
	// is absent, or entered-in-error if the archive read it first.
	arch := filepath.Join(root, "archive.json")
	out.Reset()
	cli(t, e, "export", "fhir", "--dir", devR, "--conversation", id.String(), "--out", arch)
	if st, err := os.Stat(arch); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("archive bundle file: %v", err)
	}
	adata, _ := os.ReadFile(arch)
	if err := fhirschema.Validate(adata); err != nil {
		t.Fatalf("the archive's bundle fails the FHIR R4 schema: %v", err)
	}
	if !bytes.Contains(adata, []byte("calcium gluconate 30 ml given")) || !bytes.Contains(adata, []byte(`"versionId"`)) ||
		bytes.Contains(adata, []byte("wrong bed")) && !bytes.Contains(adata, []byte("entered-in-error")) {
		t.Fatal("the archive's export lacks the edit or keeps a deleted message as standing")
	}

	file := filepath.Join(root, "bay3.json")
	out.Reset()
	cli(t, e, "export", "fhir", "--dir", devB, "--conversation", id.String(), "--out", file)
	if !strings.Contains(out.String(), "filed 4 messages") {
		t.Fatalf("export said %q", out.String())
	}
	for _, secret := range []string{"Jane", "9434765919", "943 476 5919", "K+", "ECG"} {
		if strings.Contains(out.String(), secret) {
			t.Fatalf("export printed patient data or text: %q", out.String())
		}
	}
	// The export is in bola's audit trail, which still verifies.
	out.Reset()
	cli(t, e, "audit", "export", "--dir", devB)
	var exported []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var ev struct {
			Kind string
			IDs  struct {
				Conversation string
				Ops          []string
			}
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("audit export line %q: %v", line, err)
		}
		if ev.Kind == "exported" && ev.IDs.Conversation == id.String() {
			exported = append(exported, ev.IDs.Ops...)
		}
	}
	if len(exported) != 4 || slices.Contains(exported, deleted.String()) {
		t.Fatalf("audit trail records the export of %v", exported)
	}
	cli(t, e, "audit", "verify", "--dir", devB)
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("bundle file: %v, mode %v", err, st.Mode().Perm())
	}
	data, _ := os.ReadFile(file)
	if err := fhirschema.Validate(data); err != nil {
		t.Fatalf("the exported bundle fails the FHIR R4 schema: %v", err)
	}
	var bundle struct {
		Type  string
		Entry []struct {
			FullURL  string         `json:"fullUrl"`
			Resource map[string]any `json:"resource"`
		}
	}
	if err := json.Unmarshal(data, &bundle); err != nil {
		t.Fatal(err)
	}
	if bundle.Type != "collection" {
		t.Fatalf("bundle type %q", bundle.Type)
	}
	byURL := map[string]map[string]any{}
	coms := map[string]map[string]any{}
	var regs []string
	for _, en := range bundle.Entry {
		r := en.Resource
		byURL[en.FullURL] = r
		ids := map[string]string{}
		for _, x := range r["identifier"].([]any) {
			x := x.(map[string]any)
			sys, _ := x["system"].(string)
			ids[sys], _ = x["value"].(string)
		}
		switch r["resourceType"] {
		case "Communication":
			coms[ids[fhir.SystemMessageID]] = r
		case "Practitioner":
			regs = append(regs, ids[fhir.SystemStaffID]+"/"+ids[fhir.SystemGMC]+ids[fhir.SystemNMC])
		case "Patient":
			if ids[fhir.SystemNHSNumber] != "9434765919" || r["birthDate"] != "1950-03-14" {
				t.Fatalf("patient %v", r)
			}
		}
	}
	if strings.Join(slices.Sorted(slices.Values(regs)), " ") != "A100/7654321 B200/12A3456B R1/" {
		t.Fatalf("practitioners %v", regs)
	}
	if len(coms) != 4 || coms[deleted.String()] != nil {
		t.Fatalf("filed %d communications (deleted one: %v)", len(coms), coms[deleted.String()] != nil)
	}
	text := func(c map[string]any) string {
		for _, p := range c["payload"].([]any) {
			if s, ok := p.(map[string]any)["contentString"].(string); ok {
				return s
			}
		}
		return ""
	}
	if text(coms[edited.String()]) != "calcium gluconate 30 ml given" || coms[urgent.String()]["priority"] != "urgent" ||
		coms[hello.String()]["priority"] != "routine" {
		t.Fatalf("edited %q, priorities %v %v", text(coms[edited.String()]), coms[urgent.String()]["priority"], coms[hello.String()]["priority"])
	}
	irt := coms[urgent.String()]["inResponseTo"].([]any)[0].(map[string]any)["reference"].(string)
	if byURL[irt]["id"] != coms[hello.String()]["id"] {
		t.Fatalf("the reply answers %s", irt)
	}
	att := coms[photo.String()]["payload"].([]any)[0].(map[string]any)["contentAttachment"].(map[string]any)
	if got, _ := base64.StdEncoding.DecodeString(att["data"].(string)); !bytes.Equal(got, full) || att["contentType"] != "image/jpeg" {
		t.Fatal("the attached photo is not the stored full image")
	}
	for _, c := range coms {
		sender := byURL[c["sender"].(map[string]any)["reference"].(string)]
		rcpt := byURL[c["recipient"].([]any)[0].(map[string]any)["reference"].(string)]
		if c["status"] != "completed" || c["sent"] == nil || sender["resourceType"] != "Practitioner" || rcpt["resourceType"] != "Practitioner" ||
			byURL[c["subject"].(map[string]any)["reference"].(string)]["resourceType"] != "Patient" {
			t.Fatalf("communication %v", c["identifier"])
		}
	}

	// Selected messages; an unknown conversation; a deleted message.
	sel := filepath.Join(root, "sel.json")
	out.Reset()
	cli(t, e, "export", "fhir", "--dir", devB, "--conversation", id.String(), "--messages", urgent.String()+","+photo.String(), "--out", sel)
	if !strings.Contains(out.String(), "filed 2 messages") {
		t.Fatalf("selected export said %q", out.String())
	}
	for _, args := range [][]string{
		{"--conversation", strings.Repeat("0f", 16)},
		{"--conversation", id.String(), "--messages", deleted.String()},
		{"--conversation", "nope"},
	} {
		r := newRootCmd(e)
		bad := filepath.Join(root, "bad.json")
		r.SetArgs(append([]string{"export", "fhir", "--dir", devB, "--out", bad}, args...))
		if err := r.ExecuteContext(context.Background()); err == nil {
			t.Fatalf("export %v succeeded", args)
		}
		if _, err := os.Stat(bad); err == nil {
			t.Fatalf("export %v wrote a file", args)
		}
	}
}
