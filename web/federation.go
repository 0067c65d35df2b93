package web

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/medmesh/medmesh/identity"
)

// federator is what the federation routes need from the backend (the
// node has it; a backend without it answers 404).
type federator interface {
	SubmitFederation(ctx context.Context, data []byte) (bool, error)
	Federations() []*identity.Federation
}

// federationView is one federation record as GET /api/v1/trust/federations
// lists it.
type federationView struct {
	Trust       string          `json:"trust"`       // the other root's subject CN
	Fingerprint string          `json:"fingerprint"` // SHA-256 of its public key, hex
	Policy      identity.Policy `json:"policy"`
	Number      uint64          `json:"number"`
	Issued      string          `json:"issued"`
	Withdrawn   bool            `json:"withdrawn"`
}

// routeFederation: POST /api/v1/trust/federation (a record file, PEM:
// accepted only if signed by our root and newer; then spread like a CRL)
// and GET /api/v1/trust/federations.
func (s *Server) routeFederation() {
	f, ok := s.b.(federator)
	if !ok {
		return
	}
	s.mux.HandleFunc("POST /api/v1/trust/federation", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, identity.MaxFederationBytes*2))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, "federation record too large")
			return
		}
		changed, err := f.SubmitFederation(r.Context(), body)
		switch {
		case errors.Is(err, identity.ErrMalformed):
			writeError(w, http.StatusBadRequest, err.Error())
		case errors.Is(err, identity.ErrUnknownCA), errors.Is(err, identity.ErrBadSignature), errors.Is(err, identity.ErrKeyUsage):
			writeError(w, http.StatusForbidden, "federation record not signed by our root CA: "+err.Error())
		case err != nil:
			writeError(w, http.StatusInternalServerError, err.Error())
		case !changed:
			writeError(w, http.StatusConflict, "federation record is not newer than the one held")
		default:
			writeJSON(w, http.StatusOK, map[string]any{"accepted": true})
		}
	})
	s.mux.HandleFunc("GET /api/v1/trust/federations", func(w http.ResponseWriter, r *http.Request) {
		out := []federationView{}
		for _, r := range f.Federations() {
			p := r.Policy
			for _, l := range []*[]string{&p.Roles, &p.Departments, &p.Sites} {
				if *l == nil {
					*l = []string{}
				}
			}
			out = append(out, federationView{
				Trust: r.RootCert.Subject.CommonName, Fingerprint: r.Other.String(), Policy: p,
				Number: r.Number, Issued: r.IssuedAt().Format("2006-01-02T15:04:05Z"), Withdrawn: r.Withdrawn,
			})
		}
		writeJSON(w, http.StatusOK, out)
	})
}
