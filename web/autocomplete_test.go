package web

import (
	"regexp"
	"testing"
)

// TestFormsKeepNoHistory: every field a user types into — titles,
// patients' names, NHS numbers and birth dates, messages, searches — has
// autocomplete off, so the browser's form history keeps none of it; only
// the passphrase field names itself to a password manager.
func TestFormsKeepNoHistory(t *testing.T) {
	html, err := appFiles.ReadFile("app/index.html")
	if err != nil {
		t.Fatal(err)
	}
	inputs := regexp.MustCompile(`<(input|textarea)\b[^>]*>`).FindAllString(string(html), -1)
	if len(inputs) < 10 {
		t.Fatalf("found %d fields: the page changed shape", len(inputs))
	}
	skip := regexp.MustCompile(`type="(checkbox|radio|file|hidden|submit|button)"`)
	for _, in := range inputs {
		switch {
		case skip.MatchString(in):
		case regexp.MustCompile(`id="pass"`).MatchString(in):
			if !regexp.MustCompile(`autocomplete="current-password"`).MatchString(in) {
				t.Errorf("the passphrase field: %s", in)
			}
		case !regexp.MustCompile(`autocomplete="off"`).MatchString(in):
			t.Errorf("a field the browser may remember: %s", in)
		}
	}
}
