package device

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/archive"
	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/mesh"
	"github.com/medmesh/medmesh/store"
	"github.com/medmesh/medmesh/witness"
)

// AuditQueue bounds the audit events waiting to be written. The trail
// never blocks what it records: an event that finds the queue full is
// dropped and counted (Trail.Stats, GET /api/v1/status).
const AuditQueue = 1024

// Trail records this device's audit events (package audit) into its
// store. Record never blocks and never fails: one goroutine, owned by
// the device, appends what is queued, many events in one batch; an append
// that fails is logged (without the event's IDs) and counted.
type Trail struct {
	log *audit.Log // nil if broken
	// broken: the log could not be opened (a head that does not verify,
	// an unreadable store record). The device runs without recording —
	// never over a fresh log that would hide the old one — and says so in
	// Stats; `medmesh audit verify` names what is wrong.
	broken error
	q      chan []audit.Event
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	// pending counts events queued or being written (Flush waits for 0).
	pending atomic.Int64
	ended   atomic.Bool // end began: Record takes nothing more
	last    atomic.Bool // end wrote the last entry: nothing is written after it
	logf    func(msg string, args ...any)
	// witnessed reports what witnesses hold of the log (set by the device
	// before anything reads Stats).
	witnessed func() *audit.Witnessed
	// appended is told of each append that succeeded (the witness
	// deposits the new head soon).
	appended atomic.Pointer[func()]
	stats    struct {
		dropped, failed, refused atomic.Uint64
		mu                       sync.Mutex
		lastErr                  string
		lastErrAt                time.Time
	}
}

func startTrail(l *audit.Log, logf func(string, ...any)) *Trail {
	t := &Trail{log: l, q: make(chan []audit.Event, AuditQueue), stop: make(chan struct{}), done: make(chan struct{}), logf: logf}
	go t.loop()
	return t
}

// brokenTrail is the trail of a device whose log could not be opened
// (err): it records nothing and counts what it is given as failed.
func brokenTrail(err error, logf func(string, ...any)) *Trail {
	t := &Trail{broken: err, logf: logf, done: make(chan struct{}), stop: make(chan struct{})}
	close(t.done)
	t.stats.lastErr, t.stats.lastErrAt = err.Error(), time.Now().UTC()
	logf("audit trail unreadable: the device runs without recording", "err", err)
	return t
}

// Record queues events for the log; it never blocks. Safe on a nil Trail.
func (t *Trail) Record(evs ...audit.Event) {
	if t == nil || len(evs) == 0 || t.ended.Load() {
		return
	}
	if t.broken != nil {
		t.stats.failed.Add(uint64(len(evs)))
		return
	}
	t.pending.Add(int64(len(evs)))
	select {
	case t.q <- evs:
	default:
		t.pending.Add(-int64(len(evs)))
		t.stats.dropped.Add(uint64(len(evs)))
	}
}

func (t *Trail) loop() {
	defer close(t.done)
	for {
		select {
		case evs := <-t.q:
			t.write(t.drain(evs))
		case <-t.stop:
			for {
				select {
				case evs := <-t.q:
					t.write(t.drain(evs))
				default:
					return
				}
			}
		}
	}
}

// drain adds what else is queued, up to a batch's worth.
func (t *Trail) drain(evs []audit.Event) []audit.Event {
	for len(evs) < 256 {
		select {
		case more := <-t.q:
			evs = append(evs, more...)
		default:
			return evs
		}
	}
	return evs
}

func (t *Trail) write(evs []audit.Event) {
	defer t.pending.Add(-int64(len(evs)))
	if t.last.Load() {
		t.stats.dropped.Add(uint64(len(evs)))
		return
	}
	// One invalid event (a caller's bug) must not cost the others: it is
	// refused alone, and counted.
	ok := evs[:0:0]
	for _, ev := range evs {
		if ev.Valid() {
			ok = append(ok, ev)
		}
	}
	if n := len(evs) - len(ok); n > 0 {
		t.stats.refused.Add(uint64(n))
		t.logf("audit events refused (invalid)", "events", n)
		if len(ok) == 0 {
			return
		}
		evs = ok
	}
	if _, err := t.log.Append(context.Background(), evs...); err != nil {
		t.stats.failed.Add(uint64(len(evs)))
		t.stats.mu.Lock()
		t.stats.lastErr, t.stats.lastErrAt = err.Error(), time.Now().UTC()
		t.stats.mu.Unlock()
		t.logf("audit append failed", "events", len(evs), "err", err)
		return
	}
	if f := t.appended.Load(); f != nil {
		(*f)()
	}
}

// end writes what is queued (waiting a few seconds at most), then ev as
// the trail's last entry: events recorded afterwards are ignored. The wipe
// calls it before it destroys the store's key.
func (t *Trail) end(ev audit.Event) {
	if t == nil || t.broken != nil || t.ended.Swap(true) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t.Flush(ctx)
	t.pending.Add(1)
	t.write([]audit.Event{ev})
	t.last.Store(true)
}

// close writes what is queued and stops the goroutine. Safe to call twice.
func (t *Trail) close() {
	if t == nil {
		return
	}
	t.once.Do(func() { close(t.stop) })
	<-t.done
}

// Stats reports the trail's counters.
func (t *Trail) Stats() audit.Stats {
	if t == nil {
		return audit.Stats{}
	}
	t.stats.mu.Lock()
	defer t.stats.mu.Unlock()
	s := audit.Stats{Dropped: t.stats.dropped.Load(), Failed: t.stats.failed.Load(), Refused: t.stats.refused.Load(),
		LastError: t.stats.lastErr, LastErrAt: t.stats.lastErrAt}
	if t.broken != nil {
		s.Broken = true
	} else {
		s.Entries = t.log.Current().Seq
	}
	if t.witnessed != nil {
		s.Witnessed = t.witnessed()
	}
	return s
}

// Since returns up to limit entries after since, oldest first.
func (t *Trail) Since(ctx context.Context, since time.Time, limit int) ([]audit.Entry, error) {
	if t.broken != nil {
		return nil, t.broken
	}
	return t.log.Since(ctx, since, limit)
}

// Head is the log's current signed head
// (zero if the trail is broken).
func (t *Trail) Head() audit.Head {
	if t.broken != nil {
		return audit.Head{}
	}
	return t.log.Current()
}

// Verify checks the whole log (see audit.Reader.Verify).
func (t *Trail) Verify(ctx context.Context, ext *audit.Head) (audit.Summary, error) {
	if t.broken != nil {
		return audit.Summary{}, t.broken
	}
	return t.log.Verify(ctx, ext)
}

// Flush waits until every event recorded before it is written or has
// failed (tests, export).
func (t *Trail) Flush(ctx context.Context) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for t.pending.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// AuditFile is the audit trail of a stopped device's directory, opened
// for reading.
type AuditFile struct {
	*audit.Reader
	PeerID peer.ID
	Key    ed25519.PublicKey
	st     *store.Store
	trust  *identity.Trust // the directory's trust roots (ca.crt): who may witness
}

// OpenAudit opens the audit trail in device directory dir (the node must
// be stopped: its store is locked while it runs), unsealing the device
// key and the store with passphrase.
func OpenAudit(dir string, passphrase []byte) (*AuditFile, error) {
	if _, err := os.Stat(filepath.Join(dir, identity.RevokedFile)); err == nil {
		return nil, fmt.Errorf("open audit trail %s: %w", dir, ErrRevoked)
	}
	key, err := identity.LoadDeviceKey(dir, passphrase)
	if err != nil {
		return nil, err
	}
	sdir := filepath.Join(dir, StoreDir)
	if _, err := os.Stat(filepath.Join(sdir, store.KeyFile)); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open audit trail %s: no store (the device has never run)", dir)
	}
	st, err := store.Open(sdir, passphrase)
	if err != nil {
		return nil, fmt.Errorf("open audit trail (is the node still running?): %w", err)
	}
	pub := key.Identity.Public().(ed25519.PublicKey)
	a := &AuditFile{Reader: audit.NewReader(st, pub), PeerID: key.PeerID(), Key: pub, st: st}
	if a.trust, err = identity.LoadTrust(filepath.Join(dir, identity.TrustFile)); err != nil {
		st.Close()
		return nil, fmt.Errorf("open audit trail %s: %w", dir, err)
	}
	return a, nil
}

// Close closes the store.
func (a *AuditFile) Close() error { return a.st.Close() }

// startWitness deposits the trail's head with the witnesses this device
// meets (anchors and archive members), and keeps others' heads when it is
// one (package witness).
func (d *Device) startWitness(backing ds.Batching) {
	isWitness := func(p peer.ID) bool { return d.n.HasRole(p, mesh.RoleAnchor) || d.n.HasRole(p, archive.Role) } // WitnessRoles
	self := d.n.Self()
	var log *audit.Reader
	if d.trail.log != nil {
		log = d.trail.log.Reader
	}
	d.wit = witness.Start(witness.Config{
		Host: d.n.Host(), Store: backing, Witness: self.HasRole(mesh.RoleAnchor) || self.HasRole(archive.Role),
		Admitted: d.n.IsAdmitted, IsWitness: isWitness, Own: d.trail.Head, Log: log,
		Key: d.key.Identity.Public().(ed25519.PublicKey), Logger: d.log, Now: d.cfg.now,
		Identity: d.key.Identity, Certs: identity.EncodeCertificates(d.cfg.chain...),
		Vet: func(a witness.Answer) error { return VetAnswer(a, d.cfg.trust, d.cfg.now()) },
	})
	d.trail.witnessed = d.wit.Status
	changed := d.wit.Changed
	d.trail.appended.Store(&changed)
	d.n.OnAdmitted(d.wit.Met)
}

// WitnessRoles are the roles that make a device a witness.
var WitnessRoles = []string{mesh.RoleAnchor, archive.Role}

// AnswerSkew is how far from a device's clock a witness's answer may be
// timed for the device to keep it.
const AnswerSkew = time.Hour

// VetAnswer is what a running device checks of a witness's answer before
// it uses or keeps it: that it is timed within AnswerSkew of now, and that
// its signer was a witness at that time under trust (CheckWitness) — so
// that `audit verify`, offline and later, can use every answer kept. An
// answer that fails is dropped (the log is not witnessed by it), never
// taken for tampering.
func VetAnswer(a witness.Answer, trust *identity.Trust, now time.Time) error {
	if d := a.Time.Sub(now); d > AnswerSkew || d < -AnswerSkew {
		return fmt.Errorf("%w: %s answered at %s, %s from this device's clock", witness.ErrAnswerTime, a.Witness,
			a.Time.Format(time.RFC3339), d.Round(time.Second))
	}
	return witness.CheckWitness(a, trust, WitnessRoles...)
}

// Witnessed is the answer a witness signed for this device that it kept
// while it ran (ok false: none kept — the log is not witnessed): the first
// its log failed, else the newest. An answer must be signed by the witness
// it names, about this device, and not name the device itself as witness:
// one that is not is an error (only the key holder writes it). An answer
// whose signer's certificate chain does not verify under this directory's
// trust roots, with the role anchor or archive, at the answer's time, is
// unusable: ok is false and unusable says why (the running device keeps
// no such answer, so it is as good as none).
func (a *AuditFile) Witnessed(ctx context.Context) (ans witness.Answer, ok bool, unusable, err error) {
	ans, ok, err = witness.Mine(ctx, a.st, a.Key)
	if err != nil || !ok {
		return ans, ok, nil, err
	}
	if err := witness.CheckWitness(ans, a.trust, WitnessRoles...); err != nil {
		return witness.Answer{}, false, fmt.Errorf("witness answer unusable: %w", err), nil
	}
	return ans, true, nil, nil
}

// FailedAnswers are the answers this device kept because its log did not
// pass them (one per witness; package witness): a truncation or rewrite a
// witness once showed. Unusable ones (see Witnessed) are left out and
// counted.
func (a *AuditFile) FailedAnswers(ctx context.Context) (usable []witness.Answer, unusable int, err error) {
	all, err := witness.Failed(ctx, a.st, a.Key)
	if err != nil {
		return nil, 0, err
	}
	for _, ans := range all {
		if witness.CheckWitness(ans, a.trust, WitnessRoles...) != nil {
			unusable++
			continue
		}
		usable = append(usable, ans)
	}
	return usable, unusable, nil
}

// ConflictFor is the evidence this directory holds, as a witness, against
// device p: the first head p deposited that did not extend the head held
// (ok false: none).
func (a *AuditFile) ConflictFor(ctx context.Context, p peer.ID) (audit.Head, bool, error) {
	return witness.Conflict(ctx, a.st, p)
}

// HeldFor is the head of device p's log this directory holds as a witness
// (ok false: none).
func (a *AuditFile) HeldFor(ctx context.Context, p peer.ID) (audit.Head, bool, error) {
	return witness.Held(ctx, a.st, p)
}
