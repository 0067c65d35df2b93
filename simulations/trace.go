package simulations

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Contact traces. A trace file holds, one per line, rows of any of these
// forms (blank lines and lines starting with # are skipped; a first line
// that is not data is a header):
//
//	seconds,device,place              a move: the device is in place from then on
//	up_s,down_s,device_a,device_b     a pairwise contact (the CSV form of published traces)
//	time CONN a b up|down             The ONE simulator's connectivity events (tab- or space-separated)
//
// Times are seconds from the start of the run, at most MaxHours. Device
// names are the scenario's (group-1, group-2, …) or, when the scenario
// lists no devices, the trace's own node IDs, which become the devices.
//
// How a trace is read, in every engine alike:
//   - trace times count in whole seconds: a contact lasts until the end of
//     the second its down falls in, and at least MinContactSeconds — so
//     all the contacts that start in one second are up together before any
//     of them goes down, whatever the order of the rows;
//   - the rows of one pair that overlap or touch (traces record each
//     direction's sighting separately) are one contact;
//   - a ONE "up" for a pair already up, or a "down" for a pair not up, is
//     ignored; a pair still up at the end of the file stays up until the
//     end of the run;
//   - every device starts out of reach: a device that appears in no row
//     meets nobody (a bridge still has its WAN).

// MaxHours caps a run, and so a trace: 30 days.
const MaxHours = 720

// MinContactSeconds is the shortest contact: a sighting of zero length
// moves what one second of the link carries (see Scenario.LinkKBps).
const MinContactSeconds = 1

// maxTraceLine bounds one line of a trace or messages file.
const maxTraceLine = 64 << 10

// errTrace marks a malformed trace or messages file.
var errTrace = errors.New("malformed")

// traceMove is a "seconds,device,place" row.
type traceMove struct {
	At         float64
	Dev, Place string
	Line       int
}

// traceContact is a pairwise contact, A < B; Down is +Inf while a ONE
// contact was never taken down.
type traceContact struct {
	Up, Down float64
	A, B     string
	Line     int
}

// trace is a parsed trace file, before its names are matched to devices.
type trace struct {
	Moves    []traceMove
	Contacts []traceContact // merged per pair, ordered by Up, then A, B
	End      float64        // the latest time in the file (a contact's down as read)
	Nodes    []string       // every device named, numerically ordered if all are numbers
}

// parseTrace reads a trace (see above); errors name the line.
func parseTrace(r io.Reader) (*trace, error) {
	tr := &trace{}
	open := map[[2]string]traceContact{} // ONE contacts up now
	seen := map[string]bool{}
	name := func(s string) {
		if !seen[s] {
			seen[s] = true
			tr.Nodes = append(tr.Nodes, s)
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxTraceLine)
	data := false
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("line %d: %w: %s", n, errTrace, fmt.Sprintf(format, args...))
		}
		var f []string
		if strings.Contains(line, ",") {
			f = strings.Split(line, ",")
			for i := range f {
				f[i] = strings.TrimSpace(f[i])
			}
		} else {
			f = strings.Fields(line)
		}
		if !data && !isNumber(f[0]) && (len(f) == 3 || len(f) == 4) {
			data = true
			continue // a header
		}
		data = true
		switch {
		case len(f) == 5 && f[1] == "CONN":
			t, err := traceTime(f[0])
			if err != nil {
				return nil, bad("%v", err)
			}
			a, b, err := pair(f[2], f[3])
			if err != nil {
				return nil, bad("%v", err)
			}
			name(a)
			name(b)
			tr.End = max(tr.End, t)
			k := [2]string{a, b}
			switch strings.ToLower(f[4]) {
			case "up":
				if _, up := open[k]; !up {
					open[k] = traceContact{Up: t, A: a, B: b, Line: n}
				}
			case "down":
				if c, up := open[k]; up {
					if t < c.Up {
						return nil, bad("contact of %s and %s goes down at %s s, before it came up (line %d): rows must be in time order", a, b, f[0], c.Line)
					}
					c.Down = t
					tr.Contacts = append(tr.Contacts, c)
					delete(open, k)
				}
			default:
				return nil, bad("want up or down, got %q", f[4])
			}
		case len(f) == 3:
			t, err := traceTime(f[0])
			switch {
			case err != nil:
				return nil, bad("%v", err)
			case f[1] == "" || f[2] == "":
				return nil, bad("empty device or place name")
			}
			name(f[1])
			tr.End = max(tr.End, t)
			tr.Moves = append(tr.Moves, traceMove{At: t, Dev: f[1], Place: f[2], Line: n})
		case len(f) == 4:
			up, err := traceTime(f[0])
			if err != nil {
				return nil, bad("%v", err)
			}
			down, err := traceTime(f[1])
			switch {
			case err != nil:
				return nil, bad("%v", err)
			case down < up:
				return nil, bad("contact goes down (%s s) before it comes up (%s s)", f[1], f[0])
			}
			a, b, err := pair(f[2], f[3])
			if err != nil {
				return nil, bad("%v", err)
			}
			name(a)
			name(b)
			tr.End = max(tr.End, down)
			tr.Contacts = append(tr.Contacts, traceContact{Up: up, Down: down, A: a, B: b, Line: n})
		default:
			return nil, bad("want seconds,device,place or up_s,down_s,device_a,device_b or \"time CONN a b up|down\" (%d fields)", len(f))
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: a line longer than %d bytes", errTrace, maxTraceLine)
		}
		return nil, err
	}
	for _, c := range open {
		c.Down = math.Inf(1)
		tr.Contacts = append(tr.Contacts, c)
	}
	tr.Contacts = mergeContacts(tr.Contacts)
	slices.SortStableFunc(tr.Moves, func(x, y traceMove) int { return cmpFloat(x.At, y.At) })
	sortNodes(tr.Nodes)
	return tr, nil
}

// traceTime reads a time in seconds: finite, not negative, within MaxHours.
func traceTime(s string) (float64, error) {
	t, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil || math.IsNaN(t) || math.IsInf(t, 0):
		return 0, fmt.Errorf("bad time %q", s)
	case t < 0:
		return 0, fmt.Errorf("negative time %q", s)
	case t > MaxHours*3600:
		return 0, fmt.Errorf("time %q is beyond the %d h cap of a run", s, MaxHours)
	}
	return t, nil
}

// pair orders two device names; they must differ and not be empty.
func pair(a, b string) (string, string, error) {
	switch {
	case a == "" || b == "":
		return "", "", errors.New("empty device name")
	case a == b:
		return "", "", fmt.Errorf("a contact of %q with itself", a)
	case b < a:
		a, b = b, a
	}
	return a, b, nil
}

// contactEnd is when a contact read from a trace ends: the end of the
// second its down falls in, and at least MinContactSeconds after it came
// up.
func contactEnd(up, down float64) float64 {
	if math.IsInf(down, 1) {
		return down
	}
	return max(math.Floor(down)+1, up+MinContactSeconds)
}

// mergeContacts stretches every contact to contactEnd and makes one
// contact of a pair's contacts that overlap or touch; the result is
// ordered by Up, then A, then B.
func mergeContacts(cs []traceContact) []traceContact {
	for i := range cs {
		cs[i].Down = contactEnd(cs[i].Up, cs[i].Down)
	}
	slices.SortStableFunc(cs, func(x, y traceContact) int {
		if c := strings.Compare(x.A, y.A); c != 0 {
			return c
		}
		if c := strings.Compare(x.B, y.B); c != 0 {
			return c
		}
		return cmpFloat(x.Up, y.Up)
	})
	out := cs[:0]
	for _, c := range cs {
		if n := len(out); n > 0 && out[n-1].A == c.A && out[n-1].B == c.B && c.Up <= out[n-1].Down {
			out[n-1].Down = max(out[n-1].Down, c.Down)
			continue
		}
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(x, y traceContact) int {
		if c := cmpFloat(x.Up, y.Up); c != 0 {
			return c
		}
		if c := strings.Compare(x.A, y.A); c != 0 {
			return c
		}
		return strings.Compare(x.B, y.B)
	})
	return out
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sortNodes orders node IDs numerically when all are integers (ONE's
// 0-based hosts), else as strings.
func sortNodes(ns []string) {
	nums := true
	for _, n := range ns {
		if _, err := strconv.ParseInt(n, 10, 64); err != nil {
			nums = false
			break
		}
	}
	slices.SortFunc(ns, func(a, b string) int {
		if nums {
			x, _ := strconv.ParseInt(a, 10, 64)
			y, _ := strconv.ParseInt(b, 10, 64)
			if x != y {
				return cmpFloat(float64(x), float64(y))
			}
		}
		return strings.Compare(a, b)
	})
}

// messageRow is a "created_s,from,to[,conversation]" row of a messages file.
type messageRow struct {
	At           float64
	From, To     string
	Conversation string
	Line         int
}

// parseMessages reads a messages file: rows of created_s,from,to and an
// optional conversation name (a first line that is not data is a header).
// Without a conversation, a row is a one-to-one message from from to to;
// with one, to may be empty. Errors name the line.
func parseMessages(r io.Reader) ([]messageRow, error) {
	var out []messageRow
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxTraceLine)
	data := false
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Split(line, ",")
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		if !data && !isNumber(f[0]) {
			data = true
			continue
		}
		data = true
		bad := func(format string, args ...any) error {
			return fmt.Errorf("line %d: %w: %s", n, errTrace, fmt.Sprintf(format, args...))
		}
		if len(f) != 3 && len(f) != 4 {
			return nil, bad("want created_s,from,to[,conversation] (%d fields)", len(f))
		}
		t, err := traceTime(f[0])
		if err != nil {
			return nil, bad("%v", err)
		}
		m := messageRow{At: t, From: f[1], To: f[2], Line: n}
		if len(f) == 4 {
			m.Conversation = f[3]
		}
		switch {
		case m.From == "":
			return nil, bad("empty sender")
		case m.Conversation == "" && m.To == "":
			return nil, bad("a one-to-one message needs a recipient (or name a conversation)")
		case m.From == m.To:
			return nil, bad("%q sends to itself", m.From)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: a line longer than %d bytes", errTrace, maxTraceLine)
		}
		return nil, err
	}
	return out, nil
}
