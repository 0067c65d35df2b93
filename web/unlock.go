package web

import (
	"sync"
	"time"
)

// Unlock limits. Each attempt costs one passphrase KDF (argon2id, 64 MiB
// for a real device key), so attempts run one at a time, and after a wrong
// passphrase the next attempt waits: UnlockBackoff after the first failure
// in a row, doubling per further failure up to UnlockBackoffMax, reset by a
// right passphrase. At the cap that is 60 guesses an hour, 1,440 a day.
const (
	UnlockBackoff    = time.Second
	UnlockBackoffMax = time.Minute
)

// unlockGate serialises passphrase checks and backs off after failures.
// It is one per node, not per client: every client of a loopback API comes
// from the same address, so a per-client count would count nothing.
type unlockGate struct {
	mu    sync.Mutex
	busy  bool      // a check is running
	fails int       // wrong passphrases in a row
	until time.Time // no check before this
	now   func() time.Time
}

// enter claims the right to run one check. When it may not, it says why
// (ErrUnlockBusy, ErrUnlockBackoff) and how long the caller should wait.
func (g *unlockGate) enter() (wait time.Duration, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.busy {
		return time.Second, ErrUnlockBusy
	}
	if now := g.now(); now.Before(g.until) {
		return g.until.Sub(now), ErrUnlockBackoff
	}
	g.busy = true
	return 0, nil
}

// leave ends the check enter allowed, recording its outcome.
func (g *unlockGate) leave(right bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.busy = false
	if right {
		g.fails, g.until = 0, time.Time{}
		return
	}
	g.fails++
	d := UnlockBackoffMax
	if g.fails <= 7 { // 1 s << 6 = 64 s is past the cap already
		d = min(UnlockBackoff<<(g.fails-1), UnlockBackoffMax)
	}
	g.until = g.now().Add(d)
}

// abandon ends the check enter allowed without an outcome: nothing was
// tried (a quick-unlock PIN cleared while its attempt waited).
func (g *unlockGate) abandon() {
	g.mu.Lock()
	g.busy = false
	g.mu.Unlock()
}
