package patient

// Red-team round 6: what a patient may hold.

import (
	"errors"
	"testing"
)

// TestRedteam6BidiOverrideInNameRefused
//
// Attack: a member (or a paste from another system) sets a patient whose
// name ends in U+202E RIGHT-TO-LEFT OVERRIDE (or holds U+2066..2069
// isolates, U+200E/F marks, zero-width characters). Validate refuses only
// Cc control characters; these are Cf "format" characters, so New,
// Validate and every replica accept the name.
//
// Impact: the app shows a patient as one string, `${name} ${nhs}` in the
// conversation list, so everything after the override — the NHS number —
// is displayed reversed: "943 476 5919" reads "9195 674 349". Colleagues
// see a different NHS number from the one the conversation is linked to
// (and the one a ?patient= search matches): a wrong-patient hazard the
// check-digit validation was meant to rule out.
func TestRedteam6BidiOverrideInNameRefused(t *testing.T) {
	for _, name := range []string{"Jane Doe\u202e", "Jane\u2066Doe", "Ja\u200fne", "Jane\u200bDoe"} {
		if _, err := New("943 476 5919", name, "1950-03-14", now); !errors.Is(err, ErrName) {
			t.Errorf("name %+q accepted (err %v)", name, err)
		}
	}
}

// TestRedteam6PlaceholderNHSNumbersRefused
//
// Attack: a clinician who does not know the NHS number types the usual
// placeholder, 000 000 0000 or 111 111 1111 (or any repeated digit whose
// sum happens to pass modulus 11). The check digit of 000000000 is 0 and
// of 111111111 is 1, so both pass ParseNHSNumber.
//
// Impact: conversations about different unidentified patients are all
// linked to the same "valid" NHS number — a ?patient= search, a FHIR
// export and every colleague see them as one patient. These numbers are
// never issued (NHS numbers are allocated from 400… to 799… and 010…–311…
// for CHI); an all-one-digit number is refused by NHS systems.
func TestRedteam6PlaceholderNHSNumbersRefused(t *testing.T) {
	for _, n := range []string{"0000000000", "1111111111", "2222222222"} {
		if _, err := ParseNHSNumber(n); err == nil {
			t.Errorf("placeholder NHS number %s accepted", n)
		}
	}
}
