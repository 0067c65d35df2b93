package audit

import (
	"errors"
	"fmt"
)

// Reasons an entry or the log fails verification (wrapped in a
// *BrokenError naming the entry).
var (
	ErrMalformed    = errors.New("malformed entry")
	ErrMissing      = errors.New("entry missing")
	ErrSequence     = errors.New("entry out of sequence (reordered, or entries missing before it)")
	ErrChain        = errors.New("entry does not chain to the one before it (edited or reordered)")
	ErrTime         = errors.New("entry time not after the one before it")
	ErrForeign      = errors.New("entry signed for another device")
	ErrSignature    = errors.New("entry signature does not verify (edited or forged)")
	ErrTruncated    = errors.New("log truncated: entries the head vouches for are missing")
	ErrHeadMismatch = errors.New("entry differs from the one the head vouches for")
	ErrBadHead      = errors.New("audit head malformed or not signed by this device")
)

// ErrInvalid: an event that may not be appended (unknown kind, IDs too
// long or too many).
var ErrInvalid = errors.New("invalid audit event")

// BrokenError names the first entry at which verification failed.
type BrokenError struct {
	Seq uint64
	Err error
}

func (e *BrokenError) Error() string { return fmt.Sprintf("audit entry %d: %v", e.Seq, e.Err) }

// Unwrap returns the reason.
func (e *BrokenError) Unwrap() error { return e.Err }

func broken(seq uint64, err error) error { return &BrokenError{Seq: seq, Err: err} }
