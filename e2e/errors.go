package e2e

import "errors"

// Errors.
var (
	ErrMalformed    = errors.New("malformed envelope")
	ErrBadSignature = errors.New("bad envelope signature")
	ErrTooLarge     = errors.New("envelope too large")
	ErrUnknownEpoch = errors.New("unknown key epoch")
	ErrUnknownChain = errors.New("no chain for this sender in this epoch")
	ErrKeyGone      = errors.New("message key deleted (older than the key window) or index too far ahead")
	ErrDecrypt      = errors.New("decryption failed")
	ErrNoSeal       = errors.New("welcome holds nothing for this device")
	ErrBadPrekey    = errors.New("bad prekey")
	ErrPrekeyGone   = errors.New("prekey private half deleted")
	ErrBadCommit    = errors.New("welcome secret does not match its commitment")
)
