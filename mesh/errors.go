package mesh

import "errors"

// Errors. The mesh never sends them to a peer: a peer that breaks the
// protocol has its stream reset. They wrap what failed, for logs.
var (
	// ErrProtocol: a peer broke the sync or held protocol (a malformed or
	// unexpected frame).
	ErrProtocol = errors.New("sync protocol violation")
	// ErrOfferTooLarge: an offer of more than maxOfferTags tags, or pages
	// that are not full, ascending and of 16-byte tags.
	ErrOfferTooLarge = errors.New("sync offer too large")
	// ErrBudget: a peer asked for more work in one sync session than its
	// budget (recon rounds, control bytes, wants) allows.
	ErrBudget = errors.New("sync session over budget")
	// ErrStored: a carried envelope in the store that does not decode, or
	// is not what its key names.
	ErrStored = errors.New("malformed carried envelope in store")
	// errMisfiled: an envelope pushed on another conversation's topic.
	errMisfiled = errors.New("envelope on another conversation's topic")
)
