package patient

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxName is the longest name, in bytes.
const MaxName = 200

// DateLayout is how a birth date is written: YYYY-MM-DD.
const DateLayout = time.DateOnly

// earliest is the first birth date taken: anything before is a typo.
var earliest = time.Date(1880, 1, 1, 0, 0, 0, 0, time.UTC)

// NHSNumber is a normalised NHS number: ten ASCII digits, the last the
// modulus-11 check digit of the first nine.
type NHSNumber string

// weights of the first nine digits.
var weights = [9]int{10, 9, 8, 7, 6, 5, 4, 3, 2}

// CheckDigit computes the check digit of nine digits: 11 − (Σ dᵢ·wᵢ mod 11),
// 11 becoming 0; ok is false when it would be 10 (no NHS number has those
// nine digits). first9 must be nine ASCII digits.
func CheckDigit(first9 string) (digit int, ok bool) {
	if len(first9) != 9 {
		return 0, false
	}
	sum := 0
	for i := range 9 {
		c := first9[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		sum += int(c-'0') * weights[i]
	}
	d := 11 - sum%11
	switch d {
	case 11:
		return 0, true
	case 10:
		return 0, false
	}
	return d, true
}

// ParseNHSNumber normalises an NHS number as typed — spaces and hyphens
// between digits are dropped — and checks its length and check digit.
func ParseNHSNumber(s string) (NHSNumber, error) {
	var b [10]byte
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			if n == len(b) {
				return "", ErrNHSFormat
			}
			b[n] = c
			n++
		case c == ' ' || c == '-':
		default:
			return "", ErrNHSFormat
		}
	}
	switch {
	case n == 0:
		return "", ErrNoNHSNumber
	case n != len(b):
		return "", ErrNHSFormat
	}
	d, ok := CheckDigit(string(b[:9]))
	if !ok || placeholder(b) {
		return "", ErrNHSInvalid
	}
	if int(b[9]-'0') != d {
		return "", ErrNHSCheckDigit
	}
	return NHSNumber(b[:]), nil
}

// Valid reports whether n is normalised and its check digit matches.
func (n NHSNumber) Valid() bool {
	p, err := ParseNHSNumber(string(n))
	return err == nil && p == n
}

// String is the number as NHS guidance writes it: 3-3-4 digits, spaced
// ("943 476 5919"). An invalid number is returned unchanged.
func (n NHSNumber) String() string {
	if len(n) != 10 {
		return string(n)
	}
	return string(n[:3]) + " " + string(n[3:6]) + " " + string(n[6:])
}

// Patient is who a conversation is about.
type Patient struct {
	NHSNumber NHSNumber
	Name      string
	BirthDate string // YYYY-MM-DD; empty if unknown
}

// New normalises and checks a patient as a user typed it: the NHS number
// (required), a name (trimmed) and a birth date (YYYY-MM-DD, optional)
// that must not be after today anywhere on Earth at now — a baby born
// today is a patient.
func New(nhs, name, birthDate string, now time.Time) (Patient, error) {
	n, err := ParseNHSNumber(nhs)
	if err != nil {
		return Patient{}, err
	}
	p := Patient{NHSNumber: n, Name: strings.TrimSpace(name), BirthDate: strings.TrimSpace(birthDate)}
	if err := p.Check(now); err != nil {
		return Patient{}, err
	}
	return p, nil
}

// Validate checks what every replica can check the same way, without a
// clock: the NHS number is normalised with a matching check digit, the
// name fits, the birth date is a real date no earlier than 1880.
func (p Patient) Validate() error {
	if p.NHSNumber == "" {
		return ErrNoNHSNumber
	}
	if _, err := ParseNHSNumber(string(p.NHSNumber)); err != nil {
		return err
	}
	if len(p.NHSNumber) != 10 {
		return ErrNHSFormat // parsed, but not normalised (spaces or hyphens kept)
	}
	if len(p.Name) > MaxName || !utf8.ValidString(p.Name) || strings.ContainsFunc(p.Name, hidden) {
		return ErrName
	}
	if p.BirthDate != "" {
		d, err := time.Parse(DateLayout, p.BirthDate)
		if err != nil || d.Format(DateLayout) != p.BirthDate {
			return ErrBirthDate
		}
		if d.Before(earliest) {
			return ErrBirthTooOld
		}
	}
	return nil
}

// Check is Validate, and a birth date not after the latest date it is
// anywhere at now (UTC+14).
func (p Patient) Check(now time.Time) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if p.BirthDate != "" {
		d, _ := time.Parse(DateLayout, p.BirthDate)
		if d.Format(DateLayout) > now.UTC().Add(14*time.Hour).Format(DateLayout) {
			return ErrBirthFuture
		}
	}
	return nil
}

// Matches reports whether a search finds this patient: a query holding
// digits (spaces and hyphens ignored) matches NHS numbers containing them;
// any other query matches names containing it, ignoring case. An empty
// query matches nothing.
func (p Patient) Matches(query string) bool {
	q := strings.TrimSpace(query)
	if q == "" {
		return false
	}
	digits := strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' {
			return -1
		}
		return r
	}, q)
	if digits != "" && strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }) < 0 {
		return p.NHSNumber != "" && strings.Contains(string(p.NHSNumber), digits)
	}
	return p.Name != "" && strings.Contains(strings.ToLower(p.Name), strings.ToLower(q))
}

// hidden reports a character a name must not hold: a control character,
// or a format character (Unicode Cf: bidirectional overrides, isolates
// and marks, zero-width spaces and joiners), which would change how the
// text after it — the NHS number beside the name — is displayed, or hide
// a difference between two names that look the same.
func hidden(r rune) bool { return unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) }

// placeholder reports a number of one repeated digit (000 000 0000,
// 111 111 1111, …): typed when the number is not known, never issued,
// and two of them pass the check digit.
func placeholder(b [10]byte) bool {
	for _, c := range b[1:] {
		if c != b[0] {
			return false
		}
	}
	return true
}
