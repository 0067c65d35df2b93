package chat

import "errors"

// Errors.
var (
	ErrWrongConversation = errors.New("envelope belongs to another conversation")
	ErrNotAuthorised     = errors.New("op not authorised by the conversation's membership")
	ErrNotMember         = errors.New("this device is not a member")
	ErrNoSuchMessage     = errors.New("no such message")
	ErrNoKeys            = errors.New("no key epoch this device can send in")
	ErrInvalidPayload    = errors.New("invalid op payload")
	ErrTooLarge          = errors.New("message too large")
)
