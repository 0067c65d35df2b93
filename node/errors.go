package node

import "errors"

// Errors. Callers test with errors.Is; the wrapped message names the peer.
var (
	ErrNotAdmitted = errors.New("peer not admitted")
	ErrClosed      = errors.New("node closed")
	// ErrUnknownPeer: a colleague the directory has no entry for.
	ErrUnknownPeer = errors.New("unknown peer")
	// ErrRevoked: a colleague whose certificate (or issuing CA) a CRL this
	// node holds revokes. The directory keeps the entry (the mesh judges
	// the colleague's old messages by it) but never offers it.
	ErrRevoked = errors.New("colleague's certificate revoked")
	// ErrMisbehaving: an admitted peer kept sending messages our
	// validators rejected; it is disconnected and blocked for a while.
	ErrMisbehaving = errors.New("peer sent too many invalid messages")
)
