// Package patient is who a conversation is about: an NHS number checked by
// its modulus-11 check digit, a name and a date of birth. It validates and
// formats; it stores and sends nothing.
//
// Invariants:
//   - Pure: no I/O, no goroutines, no logging, no clock of its own (the
//     caller passes "now" where a rule needs one).
//   - Errors name the field and what is wrong with it, never the value:
//     an error may reach a log, and patient data never does.
//   - Every Patient that Validate accepts round-trips: its NHS number is
//     ten ASCII digits with a valid check digit and not one repeated
//     digit (a placeholder), its name fits MaxName bytes of valid UTF-8
//     without control or format characters (Unicode Cc, Cf: no
//     bidirectional overrides or zero-width characters that would change
//     how the NHS number beside it reads), and its birth date,
//     if set, is a YYYY-MM-DD calendar date.
//   - Validate depends on the value alone, so every replica of a
//     conversation judges a patient op the same way; Check adds the rules
//     that need the local clock (no birth date in the future) and is only
//     for what a user types.
package patient
