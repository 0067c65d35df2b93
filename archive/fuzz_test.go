package archive

import (
	"bytes"
	"testing"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/patient"
)

// FuzzRecord: a filed record read back from the store never panics, and
// what decodes re-encodes to the same bytes (detcbor's canonical rule).
func FuzzRecord(f *testing.F) {
	p := &patient.Patient{NHSNumber: "9434765919", Name: "Jane Doe", BirthDate: "1950-03-14"}
	for _, r := range []Record{
		{},
		{Conversation: chat.ConversationID{1}, Message: crdt.OpID{2}, Version: 1, Status: StatusCompleted, FiledUs: 1, Sender: "12D3KooW", Recipients: []string{"a", "b"}, SentUs: 2, Text: "hello", Patient: p},
		{Version: 2, Status: StatusEnteredInError, Photo: []byte{0xff, 0xd8, 0xff}, PhotoThumb: true, Urgent: true, Edited: true},
	} {
		b, err := detcbor.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Record
		if err := detcbor.Unmarshal(data, &r, maxRecord); err != nil {
			return
		}
		again, err := detcbor.Marshal(r)
		if err != nil {
			t.Fatalf("a decoded record does not encode: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("record re-encodes differently")
		}
	})
}
