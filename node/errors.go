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
	// ErrNoCredential: the device's certificate file holds no admission
	// credential (it was signed before credentials existed); the CA signs
	// the device's CSR again (medmesh ca sign) to issue one.
	ErrNoCredential = errors.New("device.crt holds no admission credential: have the CA sign device.csr again")
	// ErrMisbehaving: an admitted peer kept sending messages our
	// validators rejected; it is disconnected and blocked for a while.
	ErrMisbehaving = errors.New("peer sent too many invalid messages")
	// ErrSitePeer: a line of a site-peers file is not a multiaddr with
	// /p2p/PEER_ID.
	ErrSitePeer = errors.New("not a site peer address")
)
