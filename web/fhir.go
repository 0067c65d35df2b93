package web

import (
	"errors"
	"net/http"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/fhir"
)

// getFHIR files a conversation: GET /api/v1/conversations/{id}/fhir
// answers the FHIR R4 Bundle (type collection) of its messages as this
// device holds them (package fhir states what goes in), as
// application/fhir+json; ?messages=ID,ID selects messages. The bundle
// holds patient data: it is never cached (Cache-Control: no-store, as on
// every API answer) and never logged. An unknown conversation, or one this
// device is not a member of, is 404.
func (s *Server) getFHIR(w http.ResponseWriter, r *http.Request) {
	id, ok := s.convID(w, r)
	if !ok {
		return
	}
	var sel []crdt.OpID
	if q := r.URL.Query().Get("messages"); q != "" {
		for _, m := range strings.Split(q, ",") {
			op, err := parseOpID(strings.TrimSpace(m))
			if err != nil || op.IsZero() {
				writeError(w, http.StatusBadRequest, "messages: a comma-separated list of message IDs")
				return
			}
			sel = append(sel, op)
		}
	}
	self, err := peer.Decode(s.b.Status().PeerID)
	if err != nil {
		writeError(w, http.StatusNotFound, "no such conversation")
		return
	}
	out, err := fhir.Export(s.conv, s.staff, id, fhir.Options{Messages: sel, Recorder: s.exportRecorder(), Self: self})
	switch {
	case errors.Is(err, fhir.ErrNoMessage):
		writeError(w, http.StatusNotFound, err.Error())
		return
	case errors.Is(err, fhir.ErrNotFiled):
		writeError(w, http.StatusGone, err.Error())
		return
	case err != nil:
		writeError(w, statusOf(err), err.Error())
		return
	}
	w.Header().Set("Content-Type", fhir.ContentType)
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

// exportRecorder records each export in the device's audit trail (the
// "exported" event); an export the trail cannot record is refused.
func (s *Server) exportRecorder() fhir.Recorder {
	if rec, ok := s.audit.(fhir.Recorder); ok {
		return rec
	}
	return nil
}
