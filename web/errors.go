package web

import "errors"

// Refusals of the request guard and the unlock gate. Their texts are what
// clients see in {"error": ...}.
var (
	// ErrUnknownHost: the Host header names none of the node's hosts (a
	// DNS-rebinding page, or a proxy we do not know).
	ErrUnknownHost = errors.New("request for a host this node does not serve")
	// ErrForeignOrigin: the request came from a page of another origin.
	ErrForeignOrigin = errors.New("request from another origin")
	// ErrNoOrigin: a state-changing request authenticated by the app's
	// session cookie carried no Origin (tools use the bearer token).
	ErrNoOrigin = errors.New("session request without an Origin")
	// ErrUnlockBusy: another unlock attempt is being checked.
	ErrUnlockBusy = errors.New("another unlock attempt is running; retry shortly")
	// ErrUnlockBackoff: wrong passphrases in a row; wait before retrying.
	ErrUnlockBackoff = errors.New("too many wrong passphrases; retry later")
	// ErrNoPIN: no quick-unlock PIN is set for this browser (none was set,
	// the node restarted, the app was locked by hand, or wrong PINs
	// cleared it).
	ErrNoPIN = errors.New("no quick-unlock PIN is set: unlock with the passphrase")
	// ErrPINCleared: this wrong PIN was the last allowed; the PIN is gone.
	ErrPINCleared = errors.New("wrong PIN, too many times: unlock with the passphrase")
)

// ErrLoopbackTaken: the API listens on 127.0.0.1:PORT but another process
// holds [::1]:PORT, where browsers send http://localhost:PORT.
var ErrLoopbackTaken = errors.New("the IPv6 loopback address on the API's port is held by another process")
