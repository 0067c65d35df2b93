package patient

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseNHSNumber: no input panics; whatever parses is ten digits with a
// matching check digit, parses again to itself (also formatted), and
// never came from an input with anything but digits, spaces and hyphens.
func FuzzParseNHSNumber(f *testing.F) {
	for _, c := range valid {
		f.Add(c.in)
	}
	for _, s := range []string{"", "943 476 5918", "123 456 7890", "94347659l9", "９４３４７６５９１９", "-9-4-3-4-7-6-5-9-1-9-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseNHSNumber(s)
		if err != nil {
			if n != "" {
				t.Fatalf("%q: error %v with a value", s, err)
			}
			return
		}
		if len(n) != 10 || !n.Valid() {
			t.Fatalf("%q parsed to %q", s, n)
		}
		if strings.Trim(s, "0123456789 -") != "" {
			t.Fatalf("%q: other characters accepted", s)
		}
		if again, err := ParseNHSNumber(n.String()); err != nil || again != n {
			t.Fatalf("%q: formatted %q parses to %q, %v", s, n.String(), again, err)
		}
	})
}

// FuzzNew: whatever New accepts also passes Validate (what every replica
// checks), and no error repeats the name typed.
func FuzzNew(f *testing.F) {
	f.Add("943 476 5919", "Jane Doe", "1950-03-14")
	f.Add("943 476 5918", "Zebedee Quux", "2999-01-01")
	f.Add("4010232137", "", "")
	f.Add("4010232137", "A\x00", "1950-02-30")
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, nhs, name, birth string) {
		p, err := New(nhs, name, birth, now)
		if err != nil {
			if len(name) > 3 && strings.Contains(err.Error(), name) {
				t.Fatalf("error %q repeats the name", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("New accepted %+v that Validate refuses: %v", p, err)
		}
	})
}
