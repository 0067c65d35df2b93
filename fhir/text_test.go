package fhir

import (
	"testing"
	"unicode"
)

// TestFHIRTextIsAFHIRString: whatever a member types, a string in the
// bundle holds no whitespace but space, tab, CR and LF (the R4 string
// rule, [ \r\n\t\S]+, with the JavaScript whitespace set a FHIR server
// applies) and no other control character, and ordinary text is kept.
func TestFHIRTextIsAFHIRString(t *testing.T) {
	in := "K+\f6.1\v in\u2028bay\u00a0 3\x00\x7f\u0085\ufeff\t\r\n✓"
	out := fhirText(in)
	for _, r := range out {
		if r != ' ' && r != '\t' && r != '\r' && r != '\n' && (unicode.IsSpace(r) || unicode.Is(unicode.Cc, r) || r == '\ufeff') {
			t.Fatalf("%q keeps %U", out, r)
		}
	}
	if got := fhirText("ECG now, please ✓\n"); got != "ECG now, please ✓\n" {
		t.Fatalf("ordinary text changed: %q", got)
	}
}
