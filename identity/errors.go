package identity

import "errors"

// Admission and parsing errors. Callers test with errors.Is; the wrapped
// message adds which certificate or field was at fault.
var (
	ErrMalformed       = errors.New("malformed")
	ErrUnknownCA       = errors.New("unknown issuer")
	ErrBadSignature    = errors.New("bad signature")
	ErrExpired         = errors.New("expired")
	ErrNotYetValid     = errors.New("not yet valid")
	ErrRevoked         = errors.New("revoked")
	ErrPeerMismatch    = errors.New("peer ID mismatch")
	ErrKeyUsage        = errors.New("wrong key usage")
	ErrChainTooLong    = errors.New("chain too long")
	ErrNotStaff        = errors.New("certificate names no staff member")
	ErrUnknownSerial   = errors.New("serial not issued by this CA")
	ErrAmbiguousSerial = errors.New("serial reads as two issued serials (prefix 0x for hex)")
	ErrExists          = errors.New("already exists")
)
