package patient

import "errors"

// Errors. None of them carries the value that failed.
var (
	ErrNHSFormat     = errors.New("nhs_number: must be 10 digits (spaces and hyphens allowed)")
	ErrNHSCheckDigit = errors.New("nhs_number: check digit does not match (mistyped NHS number?)")
	ErrNHSInvalid    = errors.New("nhs_number: not a valid NHS number (a placeholder of one repeated digit, or its check digit would be 10)")
	ErrNoNHSNumber   = errors.New("nhs_number: required")
	ErrName          = errors.New("name: too long, not UTF-8, or holds control or invisible formatting characters")
	ErrBirthDate     = errors.New("birth_date: must be a date as YYYY-MM-DD")
	ErrBirthFuture   = errors.New("birth_date: must not be in the future")
	ErrBirthTooOld   = errors.New("birth_date: before 1880")
)
