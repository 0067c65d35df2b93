package chat

import "errors"

// Errors.
var (
	ErrWrongConversation = errors.New("envelope belongs to another conversation")
	ErrNotAuthorised     = errors.New("op not authorised by the conversation's membership")
	ErrNotMember         = errors.New("this device is not a member")
	ErrNoSuchMessage     = errors.New("no such message")
	ErrNoKeys            = errors.New("no key epoch this device can send in")
	ErrBlind             = errors.New("this device cannot read a membership change of the group yet (a key it was given did not open): it sends nothing until it can")
	ErrInvalidPayload    = errors.New("invalid op payload")
	ErrTooLarge          = errors.New("message too large")
	ErrAckWithin         = errors.New("acknowledgement time out of bounds (30 s to 24 h, urgent messages only)")
	ErrNotEscalatable    = errors.New("message cannot be escalated")
	ErrUrgencyMismatch   = errors.New("op's urgency bit disagrees with its payload: op refused")
	// Why an op is refused or void (a message already shown is then
	// withdrawn with one of these as its reason).
	ErrRefused       = errors.New("op by a device no member ever added: not stored")
	ErrRemoved       = errors.New("sender was removed concurrently: op void")
	ErrEquivocation  = errors.New("sender sealed two ops under one message key: both void")
	ErrRevokedSender = errors.New("sender's certificate is revoked and no member endorsed the op")
)
