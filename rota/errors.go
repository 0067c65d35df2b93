package rota

import "errors"

// Errors.
var (
	ErrMalformed    = errors.New("malformed rota op")
	ErrBadSignature = errors.New("rota op signature invalid")
	ErrTooLarge     = errors.New("rota op too large")
	ErrFull         = errors.New("rota full")
	ErrUnknownRole  = errors.New("unknown on-call role")
	ErrNotAllowed   = errors.New("not allowed by certificate roles")
	ErrSite         = errors.New("on-call role of another site")
	ErrNoHolder     = errors.New("nobody else holds the on-call role now")
)
