package patient

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// Valid numbers worked by hand: Σ dᵢ·wᵢ over the first nine digits with
// weights 10..2, then 11 − (sum mod 11).
var valid = []struct{ in, want string }{
	{"943 476 5919", "9434765919"},   // 299 mod 11 = 2 → 9 (the usual test number)
	{"9434765919", "9434765919"},     //
	{"943-476-5919", "9434765919"},   //
	{" 401 023 2137 ", "4010232137"}, // 224 mod 11 = 4 → 7
	{"485 777 3457", "4857773457"},   // 268 mod 11 = 4 → 7
	{"450 557 7104", "4505577104"},   // 216 mod 11 = 7 → 4
	{"012 345 6789", "0123456789"},   // 200 mod 11 = 2 → 9
	{"700 000 0090", "7000000090"},   // 88 mod 11 = 0 → 11 → 0
	{"123 456 7881", "1234567881"},   // 230 mod 11 = 10 → 1
}

func TestParseNHSNumberValid(t *testing.T) {
	for _, c := range valid {
		got, err := ParseNHSNumber(c.in)
		if err != nil || string(got) != c.want {
			t.Errorf("ParseNHSNumber(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
		if !got.Valid() {
			t.Errorf("%q not Valid", got)
		}
	}
}

func TestParseNHSNumberInvalid(t *testing.T) {
	cases := []struct {
		in   string
		want error
	}{
		{"", ErrNoNHSNumber},
		{"  -  ", ErrNoNHSNumber},
		{"943 476 5918", ErrNHSCheckDigit}, // last digit off by one
		{"943 476 5910", ErrNHSCheckDigit},
		{"934 476 5919", ErrNHSInvalid},    // two digits swapped: 934476591 has no check digit
		{"943 476 9519", ErrNHSCheckDigit}, // two digits swapped
		{"123 456 7890", ErrNHSInvalid},    // 123456789 has check digit 10: never issued
		{"123 456 7899", ErrNHSInvalid},
		{"943 476 591", ErrNHSFormat},   // nine digits
		{"943 476 59190", ErrNHSFormat}, // eleven
		{"943.476.5919", ErrNHSFormat},  // other separators
		{"94347659l9", ErrNHSFormat},    // a letter
		{"９４３４７６５９１９", ErrNHSFormat},    // full-width digits are not ASCII
		{"943 476 5919\n", ErrNHSFormat},
	}
	for _, c := range cases {
		if _, err := ParseNHSNumber(c.in); !errors.Is(err, c.want) {
			t.Errorf("ParseNHSNumber(%q) = %v, want %v", c.in, err, c.want)
		}
	}
}

func TestFormat(t *testing.T) {
	if got := NHSNumber("9434765919").String(); got != "943 476 5919" {
		t.Fatalf("String = %q", got)
	}
	if got := NHSNumber("12").String(); got != "12" {
		t.Fatalf("short String = %q", got)
	}
}

func TestNew(t *testing.T) {
	p, err := New("943 476 5919", "  Jane Doe ", "1950-03-14", now)
	if err != nil || p != (Patient{NHSNumber: "9434765919", Name: "Jane Doe", BirthDate: "1950-03-14"}) {
		t.Fatalf("New = %+v, %v", p, err)
	}
	if _, err := New("943 476 5919", "", "", now); err != nil {
		t.Fatalf("name and birth date are optional: %v", err)
	}
	// A baby born today (in the UK, an hour ahead of UTC in summer, or
	// anywhere else) is a patient; tomorrow everywhere is not.
	late := time.Date(2026, 6, 30, 23, 30, 0, 0, time.UTC) // 00:30 on 1 July in London
	if _, err := New("943 476 5919", "Baby Doe", "2026-07-01", late); err != nil {
		t.Fatalf("born today in London: %v", err)
	}
	bad := []struct {
		nhs, name, birth string
		want             error
	}{
		{"943 476 5918", "Jane Doe", "1950-03-14", ErrNHSCheckDigit},
		{"", "Jane Doe", "1950-03-14", ErrNoNHSNumber},
		{"943 476 5919", "Jane Doe", "2026-12-02", ErrBirthFuture},
		{"943 476 5919", "Jane Doe", "3026-01-01", ErrBirthFuture},
		{"943 476 5919", "Jane Doe", "14/03/1950", ErrBirthDate},
		{"943 476 5919", "Jane Doe", "1950-02-30", ErrBirthDate},
		{"943 476 5919", "Jane Doe", "1950-3-14", ErrBirthDate},
		{"943 476 5919", "Jane Doe", "1850-01-01", ErrBirthTooOld},
		{"943 476 5919", strings.Repeat("a", MaxName+1), "", ErrName},
		{"943 476 5919", "Jane\x00Doe", "", ErrName},
		{"943 476 5919", "Jane\nDoe", "", ErrName},
		{"943 476 5919", "\xff", "", ErrName},
	}
	for _, c := range bad {
		if _, err := New(c.nhs, c.name, c.birth, now); !errors.Is(err, c.want) {
			t.Errorf("New(%q, %q, %q) = %v, want %v", c.nhs, c.name, c.birth, err, c.want)
		}
	}
}

// TestErrorsCarryNoValue: no error text repeats what was typed.
func TestErrorsCarryNoValue(t *testing.T) {
	for _, in := range []string{"943 476 5918", "943 476 591", "12345678901234", "Jane Doe 943"} {
		_, err := New(in, "Zebedee Quux", "2999-01-01", now)
		if err == nil {
			t.Fatalf("%q accepted", in)
		}
		if strings.Contains(err.Error(), strings.ReplaceAll(in, " ", "")[:6]) || strings.Contains(err.Error(), in) {
			t.Errorf("error %q repeats the input", err)
		}
	}
	_, err := New("943 476 5919", "Zebedee Quux", "2999-01-01", now)
	if err == nil || strings.Contains(err.Error(), "2999") || strings.Contains(err.Error(), "Zebedee") {
		t.Errorf("error %v repeats the input", err)
	}
}

func TestValidateNeedsNormalised(t *testing.T) {
	for _, n := range []NHSNumber{"943 476 5919", "943-476-5919", "9434765918", ""} {
		if err := (Patient{NHSNumber: n}).Validate(); err == nil {
			t.Errorf("Validate accepted NHS number %q", n)
		}
	}
}

func TestMatches(t *testing.T) {
	p := Patient{NHSNumber: "9434765919", Name: "Jane Doe", BirthDate: "1950-03-14"}
	yes := []string{"943 476 5919", "9434765919", "476 59", "943-476", "jane", "DOE", "e D", " Jane Doe "}
	no := []string{"", "  ", "943 476 5918", "john", "1950", "Jane  Doe", "9434765919 Jane"}
	for _, q := range yes {
		if !p.Matches(q) {
			t.Errorf("%q does not find the patient", q)
		}
	}
	for _, q := range no {
		if p.Matches(q) {
			t.Errorf("%q finds the patient", q)
		}
	}
	if (Patient{NHSNumber: "9434765919"}).Matches("jane") {
		t.Error("a patient without a name matched a name")
	}
}

// randomNHS returns nine random digits completed with their check digit,
// or false when those nine digits have none.
func randomNHS(r *rand.Rand) (string, bool) {
	var b strings.Builder
	for range 9 {
		b.WriteByte(byte('0' + r.IntN(10)))
	}
	d, ok := CheckDigit(b.String())
	return b.String() + strconv.Itoa(d), ok
}

// TestPropertyCheckDigit: for random numbers, exactly one final digit is
// valid — the check digit — unless the nine digits have none; changing any
// single digit, or swapping two adjacent different digits, is caught; and
// whatever separators are typed, the number normalises to its digits and
// formats back to 3-3-4.
func TestPropertyCheckDigit(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	invalidTen := 0
	for range 20000 {
		n, ok := randomNHS(r)
		if !ok {
			invalidTen++
			for d := range 10 {
				if _, err := ParseNHSNumber(n[:9] + strconv.Itoa(d)); !errors.Is(err, ErrNHSInvalid) {
					t.Fatalf("%s%d: %v, want ErrNHSInvalid", n[:9], d, err)
				}
			}
			continue
		}
		good := 0
		for d := range 10 {
			if _, err := ParseNHSNumber(n[:9] + strconv.Itoa(d)); err == nil {
				good++
			}
		}
		if good != 1 {
			t.Fatalf("%s: %d valid final digits", n[:9], good)
		}
		// Any single-digit substitution is detected.
		i := r.IntN(10)
		sub := []byte(n)
		sub[i] = byte('0' + (int(sub[i]-'0')+1+r.IntN(9))%10)
		if _, err := ParseNHSNumber(string(sub)); err == nil {
			t.Fatalf("substitution %s → %s not detected", n, sub)
		}
		// Adjacent transpositions of different digits in the first nine.
		if j := r.IntN(8); n[j] != n[j+1] {
			sw := []byte(n)
			sw[j], sw[j+1] = sw[j+1], sw[j]
			if _, err := ParseNHSNumber(string(sw)); err == nil {
				t.Fatalf("transposition %s → %s not detected", n, sw)
			}
		}
		// Separators anywhere normalise away.
		var typed strings.Builder
		for k := range 10 {
			for range r.IntN(3) {
				typed.WriteByte(" -"[r.IntN(2)])
			}
			typed.WriteByte(n[k])
		}
		got, err := ParseNHSNumber(typed.String())
		if err != nil || string(got) != n {
			t.Fatalf("%q: %q, %v", typed.String(), got, err)
		}
		if f := got.String(); f != n[:3]+" "+n[3:6]+" "+n[6:] {
			t.Fatalf("format %q", f)
		}
		if back, err := ParseNHSNumber(got.String()); err != nil || back != got {
			t.Fatalf("formatted number does not parse back: %q, %v", back, err)
		}
		if !(Patient{NHSNumber: got}).Matches(got.String()) {
			t.Fatalf("%s does not find itself", got)
		}
	}
	// About one nine-digit prefix in eleven has no check digit.
	if invalidTen < 20000/11-300 || invalidTen > 20000/11+300 {
		t.Fatalf("%d of 20000 prefixes had check digit 10", invalidTen)
	}
}

// TestPropertyBirthDate: every calendar date from 1880 to today is taken,
// and every later one refused.
func TestPropertyBirthDate(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		d := earliest.AddDate(0, 0, r.IntN(60000))
		p := Patient{NHSNumber: "9434765919", BirthDate: d.Format(DateLayout)}
		err := p.Check(now)
		future := d.After(now.Add(14 * time.Hour))
		if future != errors.Is(err, ErrBirthFuture) || (!future && err != nil) {
			t.Fatalf("%s: %v", p.BirthDate, err)
		}
		if p.Validate() != nil {
			t.Fatalf("%s: Validate %v", p.BirthDate, p.Validate())
		}
	}
}
