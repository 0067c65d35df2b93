package fhir

import "errors"

// Errors. None of them carries message text or patient data.
var (
	// ErrNoMessage: a selected message is not in the conversation.
	ErrNoMessage = errors.New("no such message in the conversation")
	// ErrNotFiled: a selected message was deleted or withdrawn, so there
	// is nothing to file.
	ErrNotFiled = errors.New("message deleted or withdrawn: nothing to file")
)
