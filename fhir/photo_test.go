package fhir

import (
	"testing"
	"time"

	"github.com/medmesh/medmesh/archive"
	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
)

// photoPayload is the payload of message id's Communication in b.
func photoPayload(t *testing.T, b map[string]any, id crdt.OpID) []any {
	t.Helper()
	_, byType := resources(t, b)
	for _, c := range byType["Communication"] {
		if identifiers(c["identifier"])[SystemMessageID] == id.String() {
			p, _ := c["payload"].([]any)
			return p
		}
	}
	t.Fatalf("no Communication for %s", id)
	return nil
}

// TestUnreadablePhotoExportsWithoutIt: a photo message whose image cannot
// be read (an empty photo op, chunks not its sender's) is exported — as a
// Communication valid against the R4 schema whose payload says the photo
// is unavailable — instead of failing the whole export; so is one an
// archive filed without its image.
func TestUnreadablePhotoExportsWithoutIt(t *testing.T) {
	f := newFixture(t)
	f.conv.Photo = func(crdt.OpID, bool) ([]byte, error) { return nil, chat.ErrNoSuchMessage }
	check := func(name string, b map[string]any) {
		t.Helper()
		p := photoPayload(t, b, f.photo)
		var said, attached bool
		for _, x := range p {
			x := x.(map[string]any)
			if x["contentString"] == PhotoUnavailable {
				said = true
			}
			if _, ok := x["contentAttachment"]; ok {
				attached = true
			}
		}
		if !said || attached {
			t.Fatalf("%s: photo payload %v: want the unavailable note and no attachment", name, p)
		}
	}
	check("live", f.export(t))

	recs := []archive.Record{
		{Conversation: f.conv.ID, Message: f.hello, Version: 1, Status: archive.StatusCompleted, Sender: f.asha.String(), SentUs: t0.UnixMicro(), Text: "K+ 6.1"},
		{Conversation: f.conv.ID, Message: f.photo, Version: 1, Status: archive.StatusCompleted, Sender: f.asha.String(),
			SentUs: t0.Add(time.Minute).UnixMicro(), PhotoUnavailable: true},
	}
	c := FromFiled(f.conv.ID, recs, f.conv.Staff)
	g := &fixture{conv: *c}
	check("filed", g.export(t))
}
