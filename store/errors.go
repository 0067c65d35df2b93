package store

import "errors"

// Errors.
var (
	ErrCorrupt = errors.New("store value fails authentication (corrupt or tampered store)")
	ErrOrphan  = errors.New("store data present without its key (wiped store?)")
	ErrWiped   = errors.New("store wiped")
	ErrClosed  = errors.New("store closed")
)
