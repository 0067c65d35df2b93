package simulations

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// traceScenario writes a trace and a messages file into a temporary
// directory and returns a scenario replaying them, devices named by the
// trace's node IDs (no places, no devices: item 4's conveniences).
func traceScenario(t *testing.T, trace, messages string) Scenario {
	t.Helper()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "trace.txt"), trace)
	write(t, filepath.Join(dir, "messages.csv"), messages)
	write(t, filepath.Join(dir, "s.json"), `{"name": "t", "hours": 1, "link_ms": 5, "link_kbps": 16384, "sync_seconds": 3600,
		"trace": "trace.txt", "messages_file": "messages.csv"}`)
	s, err := Load(filepath.Join(dir, "s.json"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// row finds the outcome of the message from → to written at sent.
func row(t *testing.T, r *Result, from, to string, sent float64) Message {
	t.Helper()
	for _, m := range r.Messages {
		if m.From == from && m.To == to && m.Sent == sent {
			return m
		}
	}
	t.Fatalf("no message %s → %s at %.0f s in %+v", from, to, sent, r.Messages)
	return Message{}
}

func runDES(t *testing.T, s Scenario) *Result {
	t.Helper()
	r, err := RunDES(s, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestTraceSameSecond: a and b, and b and c, are sighted in the same
// second (zero-length rows). Whatever the order of the rows, both contacts
// are up before either goes down, so a's message reaches c through b in
// that second — in the oracle and in the DES alike. (Rows taken in file
// order lost this path when b–c came first.)
func TestTraceSameSecond(t *testing.T) {
	const msgs = "created_s,from,to,conversation\n50,a,c,team\n3000,b,a,team\n"
	for _, tc := range []struct {
		rows      string
		up, until float64
	}{
		{"100,100,b,c\n100,100,a,b\n", 100, 101},
		{"100,100,a,b\n100,100,b,c\n", 100, 101},
		{"100.2,100.2,b,c\n100.7,100.7,a,b\n", 100.7, 101.2}, // b–c lasts a second: b passes it on
	} {
		r := runDES(t, traceScenario(t, "up_s,down_s,a,b\n"+tc.rows, msgs))
		m := row(t, r, "a", "c", 50)
		if m.Oracle != tc.up || m.Delivered < tc.up || m.Delivered >= tc.until || m.Hops != 2 {
			t.Fatalf("rows %q: a → c through b in second 100: %+v", tc.rows, m)
		}
	}
}

// TestTraceOverlappingRowsMerged: a trace records each direction's
// sighting of one contact; a second row overlapping the first extends the
// contact instead of being cut at the first row's down.
func TestTraceOverlappingRowsMerged(t *testing.T) {
	r := runDES(t, traceScenario(t, "0,100,a,b\n50,300,b,a\n", "200,a,b\n"))
	if m := row(t, r, "a", "b", 200); m.Oracle != 200 || m.Delivered < 200 || m.Delivered > 200.1 {
		t.Fatalf("a → b at 200 s, inside the merged contact 0–301 s: %+v", m)
	}
	tr, err := parseTrace(strings.NewReader("0,100,a,b\n50,300,b,a\n301,400,a,b\n500,500,a,b\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []traceContact{{Up: 0, Down: 401, A: "a", B: "b", Line: 1}, {Up: 500, Down: 501, A: "a", B: "b", Line: 4}}
	if !reflect.DeepEqual(tr.Contacts, want) {
		t.Fatalf("merged contacts %+v, want %+v", tr.Contacts, want)
	}
}

// TestTraceAbsentDevicesMeetNobody: b-1 and b-2 share a home but appear in
// no row of the trace: they meet nobody (they used to sit together at
// home all run), and the world says so.
func TestTraceAbsentDevicesMeetNobody(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "trace.csv"), "0,3600,a-1,a-2\n")
	s := Scenario{Name: "absent", Hours: 1, Places: []string{"x"}, Messages: 40, LinkMS: 5, LinkKBps: 16384, SyncSeconds: 30,
		Devices: []Group{{Name: "a", Count: 2, Home: "x"}, {Name: "b", Count: 2, Home: "x"}}, Trace: filepath.Join(dir, "trace.csv")}
	r := runDES(t, s)
	between := 0
	for _, m := range r.Messages {
		b := strings.HasPrefix(m.From, "b") || strings.HasPrefix(m.To, "b")
		switch {
		case b && (m.Delivered >= 0 || m.Oracle >= 0):
			t.Fatalf("a device in no trace row met someone: %+v", m)
		case !b && m.Delivered < 0:
			t.Fatalf("a-1 and a-2 are in contact all run: %+v", m)
		}
		if strings.HasPrefix(m.From, "b") && strings.HasPrefix(m.To, "b") {
			between++
		}
	}
	if between == 0 {
		t.Fatal("no message between b-1 and b-2: the test tests nothing")
	}
	if len(r.World.Notes) != 1 || !strings.Contains(r.World.Notes[0], "b-1, b-2 appear in no row") {
		t.Fatalf("notes: %q", r.World.Notes)
	}
}

// TestTraceContactCapacity: a contact carries what its duration and the
// link's bandwidth allow, oldest first. At 98 kbit/s (12,250 bytes/s) an
// op takes 0.1 s, so a zero-length sighting — one second, the minimum —
// carries at most 10 of a backlog of 40 (the reconciliation goes first);
// a 10-second contact carries them all.
func TestTraceContactCapacity(t *testing.T) {
	var msgs strings.Builder
	for i := range 40 {
		msgs.WriteString(strconv.Itoa(10+i) + ",a,b\n")
	}
	for _, tc := range []struct {
		trace    string
		min, max int
		end      float64
	}{{"1000,1000,a,b\n", 5, 10, 1001}, {"1000,1010,a,b\n", 40, 40, 1011}} {
		s := traceScenario(t, tc.trace, msgs.String())
		s.LinkKBps = 98
		r := runDES(t, s)
		var got []int
		for _, m := range r.Messages {
			if m.Delivered >= 0 {
				got = append(got, m.ID)
				if m.Delivered > tc.end {
					t.Fatalf("delivered after the sighting ended: %+v", m)
				}
			}
		}
		if len(got) < tc.min || len(got) > tc.max {
			t.Fatalf("%q carried %d ops, want %d–%d", tc.trace, len(got), tc.min, tc.max)
		}
		for i, id := range got {
			if id != i {
				t.Fatalf("%q carried %v: not the oldest first", tc.trace, got)
			}
		}
	}
}

// TestTraceRelaysForward: a–b and b–c are in contact all hour and the
// anti-entropy period is longer than the run. a's message reaches c
// through b at once — b forwards what it receives, as gossipsub does —
// not at a later anti-entropy round (which never comes here).
func TestTraceRelaysForward(t *testing.T) {
	r := runDES(t, traceScenario(t, "0 CONN a b up\n0\tCONN\tb\tc\tup\n", "100,a,c,team\n3000,b,a,team\n"))
	if m := row(t, r, "a", "c", 100); m.Oracle != 100 || m.Delivered < 100 || m.Delivered > 100.1 || m.Hops != 2 {
		t.Fatalf("a → c through b: %+v", m)
	}
}

// TestTraceHoursChecked: a trace running past the run's hours is an
// error naming the hours and the 720 h cap; hours 0 runs the trace's
// length; a time beyond the cap is an error on its line.
func TestTraceHoursChecked(t *testing.T) {
	s := traceScenario(t, "0,7300,a,b\n", "10,a,b\n")
	if _, err := Build(s, 1); err == nil || !strings.Contains(err.Error(), "beyond the run's hours (1)") || !strings.Contains(err.Error(), "720") {
		t.Fatalf("trace longer than the run: %v", err)
	}
	s.Hours = 0
	w, err := Build(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	if w.S.Hours != 7300.0/3600 || w.Links[0].Down != 7300.0 {
		t.Fatalf("hours 0: the run lasts %g h, link %+v", w.S.Hours, w.Links[0])
	}
	s = traceScenario(t, "0,10,a,b\n2592001,2592002,a,b\n", "10,a,b\n")
	if _, err := Build(s, 1); err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "720 h") {
		t.Fatalf("time beyond the cap: %v", err)
	}
}

// TestLinkKBpsIsKilobits: link_kbps is kilobits per second. At 8 kbit/s
// (1,000 bytes/s) a pushed op of OpBytes arrives after 1.224 s of
// transmission plus the link's round trip and the receive cost.
func TestLinkKBpsIsKilobits(t *testing.T) {
	s := Scenario{Name: "slow", Hours: 1, Places: []string{"x"}, Messages: 5, LinkMS: 5, LinkKBps: 8, SyncSeconds: 3600,
		Devices: []Group{{Name: "d", Count: 2, Home: "x"}}}
	if s.LinkBytesPerSecond() != 1000 {
		t.Fatalf("8 kbit/s = %g bytes/s", s.LinkBytesPerSecond())
	}
	r := runDES(t, s)
	want := 2*0.005 + OpBytes/1000.0 + ReceiveCost
	for _, m := range r.Messages {
		if math.Abs(m.Delivered-m.Sent-want) > 1e-6 {
			t.Fatalf("push took %.6f s, want %.6f s: %+v", m.Delivered-m.Sent, want, m)
		}
	}
	for n, b := range Builtins {
		if b.LinkBytesPerSecond() != 2000*1024 { // what they had when the field meant KiB/s
			t.Fatalf("%s: %g bytes/s", n, b.LinkBytesPerSecond())
		}
	}
}

// TestShowEveryField: a scenario as JSON (what sim show prints) has every
// field of Scenario and Group, unset ones too — trace, routing,
// conversation_size among them — and loads back as it was.
func TestShowEveryField(t *testing.T) {
	tags := func(v any) (out []string) {
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			out = append(out, strings.Split(rt.Field(i).Tag.Get("json"), ",")[0])
		}
		return out
	}
	for _, n := range Names() {
		js, err := json.Marshal(Builtins[n])
		if err != nil {
			t.Fatal(err)
		}
		var top struct {
			Devices []map[string]any `json:"devices"`
		}
		var all map[string]any
		json.Unmarshal(js, &all)
		json.Unmarshal(js, &top)
		for _, f := range tags(Scenario{}) {
			if _, ok := all[f]; !ok {
				t.Fatalf("%s: field %s not shown", n, f)
			}
		}
		for _, f := range tags(Group{}) {
			if _, ok := top.Devices[0][f]; !ok {
				t.Fatalf("%s: devices field %s not shown", n, f)
			}
		}
		p := filepath.Join(t.TempDir(), n+".json")
		write(t, p, string(js))
		back, err := Load(p)
		if err != nil || !reflect.DeepEqual(back, Builtins[n]) {
			t.Fatalf("%s does not load back as it was: %v", n, err)
		}
	}
}

// TestTraceONEFormat: The ONE's connectivity events, tab- or
// space-separated, read as the same contacts as the CSV form; a repeated
// up is ignored, a pair never taken down stays up to the end of the run;
// devices are the trace's 0-based node IDs in numeric order.
func TestTraceONEFormat(t *testing.T) {
	one := "# ONE connectivity\n0\tCONN\t0\t1\tup\n5 CONN 0 1 up\n10 CONN 1 0 down\n20 CONN 10 2 up\n30 CONN 10 2 down\n40 CONN 2 0 up\n"
	csv := "up_s,down_s,device_a,device_b\n0,10,0,1\n20,30,2,10\n"
	w1, err := Build(traceScenario(t, one, "1,0,1\n"), 1)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range w1.Devices {
		names = append(names, d.Name)
	}
	if !slices.Equal(names, []string{"0", "1", "2", "10"}) {
		t.Fatalf("devices %q", names)
	}
	w2, err := Build(traceScenario(t, csv, "1,0,1\n"), 1)
	if err != nil {
		t.Fatal(err)
	}
	want := append(slices.Clone(w2.Links), Link{Up: 40, Down: 3600, A: 0, B: 2})
	if !reflect.DeepEqual(w1.Links, want) {
		t.Fatalf("ONE links %+v, want %+v", w1.Links, want)
	}
}

// TestMessagesFile: an explicit messages file replaces generated traffic,
// one-to-one messages included: each reaches exactly its recipient, and a
// device may be in several conversations (the DES runs that).
func TestMessagesFile(t *testing.T) {
	s := traceScenario(t, "0,3600,a,b\n0,3600,b,c\n", "created_s,from,to\n100,a,b\n200,b,c\n300,c,b\n400,a,c,team\n400,b,,team\n")
	r := runDES(t, s)
	w := r.World
	if len(w.Sends) != 5 || len(w.Convs) != 3 || !w.MultiConversation() {
		t.Fatalf("sends %+v, conversations %v", w.Sends, w.Convs)
	}
	var got []string
	for _, m := range r.Messages {
		got = append(got, m.From+">"+m.To)
		if m.Delivered < 0 {
			t.Fatalf("undelivered over contacts up all run: %+v", m)
		}
	}
	if !slices.Equal(got, []string{"a>b", "b>c", "c>b", "a>c", "a>b", "b>a", "b>c"}) {
		t.Fatalf("(from, to) pairs %q", got)
	}
	for _, tc := range []struct{ msgs, want string }{
		{"100,a,zed\n", "line 1: unknown device \"zed\""},
		{"created_s,from,to\n100,a,b\nsoon,a,b\n", "line 3"},
		{"100,a,a\n", "sends to itself"},
		{"100,a\n", "line 1"},
		{"4000,a,b\n", "after the run ends"},
	} {
		if _, err := Build(traceScenario(t, "0,3600,a,b\n", tc.msgs), 1); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%q: %v, want %q", tc.msgs, err, tc.want)
		}
	}
	s.Messages = 10
	if err := s.check(); err == nil || !strings.Contains(err.Error(), "messages_file") {
		t.Fatalf("messages beside a messages file: %v", err)
	}
}

// TestTraceErrors: malformed traces are errors naming the line.
func TestTraceErrors(t *testing.T) {
	for _, tc := range []struct{ trace, want string }{
		{"0,10,a,b\nten,20,a,b\n", "line 2: malformed: bad time \"ten\""},
		{"0,10,a,b\n\n30,20,a,b\n", "line 3"},
		{"0,10,a,a\n", "with itself"},
		{"0,10,a,b,c,d\n", "line 1"},
		{"0 CONN a b sideways\n", "want up or down"},
		{"-1,10,a,b\n", "negative time"},
		{"0,NaN,a,b\n", "bad time"},
		{"0,10,a,b\n5,x,ward\n", "unknown place \"ward\""},
	} {
		_, err := Build(traceScenario(t, tc.trace, "1,a,b\n"), 1)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%q: %v, want %q", tc.trace, err, tc.want)
		}
	}
}

// FuzzParseTrace: any input either is an error or reads as contacts that
// are well formed: each up no later than its down, one per pair at a time
// (merged), ordered by up; moves in time order.
func FuzzParseTrace(f *testing.F) {
	for _, s := range []string{
		"up_s,down_s,device_a,device_b\n0,10,a,b\n5,20,b,a\n",
		"seconds,device,place\n0,a-1,ward\n60,a-1,ed\n",
		"0\tCONN\t0\t1\tup\n10 CONN 1 0 down\n",
		"# comment\n\n1,1,x,y\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		tr, err := parseTrace(strings.NewReader(string(in)))
		if err != nil {
			if !strings.Contains(err.Error(), "line") {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		last := map[[2]string]float64{}
		for i, c := range tr.Contacts {
			if !(c.Up < c.Down) || c.A >= c.B || (i > 0 && tr.Contacts[i-1].Up > c.Up) {
				t.Fatalf("contact %+v", c)
			}
			k := [2]string{c.A, c.B}
			if d, ok := last[k]; ok && c.Up <= d {
				t.Fatalf("overlapping contacts of one pair: %+v", tr.Contacts)
			}
			last[k] = c.Down
		}
		for i := 1; i < len(tr.Moves); i++ {
			if tr.Moves[i-1].At > tr.Moves[i].At {
				t.Fatalf("moves out of order: %+v", tr.Moves)
			}
		}
	})
}

// FuzzParseMessages: any input is an error naming a line, or rows with a
// sender and a recipient or conversation.
func FuzzParseMessages(f *testing.F) {
	for _, s := range []string{"created_s,from,to\n10,a,b\n", "10,a,,team\n20,b,c,team\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		rows, err := parseMessages(strings.NewReader(string(in)))
		if err != nil {
			if !strings.Contains(err.Error(), "line") {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		for _, m := range rows {
			if m.From == "" || m.From == m.To || (m.To == "" && m.Conversation == "") || m.At < 0 || math.IsNaN(m.At) {
				t.Fatalf("row %+v", m)
			}
		}
	})
}
