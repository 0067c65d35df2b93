package fhir

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
)

// BenchmarkExport renders a 500-message conversation as a FHIR bundle,
// beside the baseline of encoding the same messages with encoding/json
// (what the messages API does), measured in the same run: the figure is
// the ratio fhir/json per message.
func BenchmarkExport(b *testing.B) {
	f := newFixture(b)
	base := f.conv.Messages[:4] // text, urgent reply, photo, edited
	var msgs []chat.Message
	for i := range 500 {
		m := base[i%len(base)]
		m.ID = opID(byte(i))
		m.ID[1], m.ID[2] = byte(i>>8), byte(i)
		m.Time = t0.Add(time.Duration(i) * time.Second)
		m.Text = fmt.Sprintf("message %d: %s", i, m.Text)
		msgs = append(msgs, m)
	}
	f.conv.Messages = msgs
	f.conv.Photo = func(_ crdt.OpID, _ bool) ([]byte, error) { return f.thumb, nil }
	var fhirNs, jsonNs float64
	b.Run("fhir", func(b *testing.B) {
		for b.Loop() {
			bu, err := f.conv.Bundle(nil, t0)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := Marshal(bu); err != nil {
				b.Fatal(err)
			}
		}
		fhirNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N) / float64(len(msgs))
		b.ReportMetric(fhirNs, "ns/message")
	})
	b.Run("json-baseline", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(msgs); err != nil {
				b.Fatal(err)
			}
		}
		jsonNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N) / float64(len(msgs))
		b.ReportMetric(jsonNs, "ns/message")
	})
	if jsonNs > 0 {
		b.ReportMetric(fhirNs/jsonNs, "fhir/json")
	}
}
