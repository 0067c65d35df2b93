package web

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzReadPIN: the PIN request body is input from a page or a process.
// Whatever it holds, readPIN does not panic; it accepts exactly the bodies
// whose "pin" is a JSON string of 4–8 ASCII digits, written plainly, and
// returns those digits; a refusal never repeats the body.
func FuzzReadPIN(f *testing.F) {
	for _, seed := range []string{`{"pin":"2468"}`, `{"pin":"12345678"}`, `{"pin":"123"}`, `{"pin":"123456789"}`,
		`{"pin":1234}`, `{"pin":"12\u00334"}`, `{"pin":"１２３４"}`, `{}`, `{"pin":null}`, `{"pin":"2468","pin":"1"}`, `[`, ``} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		pin, ok := readPIN(w, httptest.NewRequest("POST", pinPath, bytes.NewReader(body)))
		var req struct {
			PIN json.RawMessage `json:"pin"`
		}
		want := json.Unmarshal(body, &req) == nil && len(req.PIN) >= 6 && len(req.PIN) <= 10 &&
			req.PIN[0] == '"' && req.PIN[len(req.PIN)-1] == '"' && strings.Trim(string(req.PIN[1:len(req.PIN)-1]), "0123456789") == ""
		if ok != want {
			t.Fatalf("%q: accepted %v, want %v", body, ok, want)
		}
		if ok && string(pin) != string(req.PIN[1:len(req.PIN)-1]) {
			t.Fatalf("%q: read %q", body, pin)
		}
		if !ok && (w.Code != 400 && w.Code != 413 || len(body) >= 4 && strings.Contains(w.Body.String(), string(body))) {
			t.Fatalf("%q: %d %s", body, w.Code, w.Body)
		}
	})
}
