// Package witness keeps each device's audit trail honest against its own
// key holder. A device's audit log (package audit) detects edits and
// reordering by its hash chain, but someone holding the device key can cut
// its tail and sign a new head. So every device deposits its signed head
// with the witnesses it meets — admitted peers whose certificate carries
// the role anchor or archive — and each witness keeps, per device, the
// newest head that extends the one it held, in its own encrypted store.
//
// The exchange (Protocol, one stream per deposit): the device sends its
// head record (audit.Head.Record) and, if it knows which entry the witness
// holds, the consistency proof from the tree of that many entries to the
// new head's tree (audit.Reader.Consistency, RFC 9162 2.1.4: at most
// ceil(log2 n)+1 hashes, 480 bytes from 5 to 10,005 entries). The witness
// checks the head's signature under the key in the sender's peer ID, and:
// holding nothing, keeps it; holding a newer head, keeps that; holding an
// older one, keeps the new head only if the proof shows the new head's
// tree extends the held head's tree (audit.VerifyConsistency against the
// held head's signed root) — without a proof, or with one from another
// entry, it answers Want (the device deposits once more with the proof); a
// proof that fails, or another head for the held entry number, is refused
// and the first such head kept as evidence (two heads signed by one device
// key that do not extend each other), carried in every later answer. An
// inclusion proof of the held entry would not do: a key holder can sign a
// head over a made-up tree holding that entry and launder a rewritten log
// through it. A held version 1 head signs no tree: the first version 2
// head past it is kept without proof (trust on first use), and a version 1
// head never replaces a version 2 one. The witness answers with an Answer
// it signs with its identity key, naming itself and the device (never the
// same peer: no device witnesses itself), holding the held head, any
// evidence (only beside a held head), its time and its certificate chain.
// The device checks the answer's signature, that it names the peer it
// asked and itself, and (Config.Vet) that its signer is a witness under
// the device's trust roots at a time near the device's clock — an answer
// that fails is dropped, not kept — then its own log against the held head
// (audit.Reader.Vouched: the entry and the tree up to it) and reports a
// mismatch or evidence in its status. It keeps one answer (the first
// showing evidence, else the newest the log failed, else the newest; a
// failing answer is never replaced by a passing one) and, apart, the first
// failing answer of each witness (at most maxFailed): a truncation once
// shown is never forgotten. `medmesh audit verify` on its stopped
// directory checks the kept answers' signatures, the witnesses'
// certificate chains and role under the directory's trust roots
// (CheckWitness), and the log against the held heads. An answer the key
// holder wrote fails those checks; a missing one is reported as not
// witnessed. An operator can also export what a witness holds, evidence
// included (`medmesh audit head --dir ANCHOR --peer ID`), and verify with
// `--head`.
//
// Rules: a witness answers only admitted peers; a head is accepted only if
// signed by the key of the peer that sends it (no one deposits for
// another); deposits and answers are bounded (maxDeposit, maxAnswer); one
// deposit per peer at a time; a deposit that is not shown to extend what
// is held changes nothing but the evidence. A witness learns of a device
// only its entry count, entry and tree hashes and time — no event of its
// log.
package witness

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// Protocol is the deposit protocol's ID.
const Protocol = "/medmesh/audit-head/2"

const (
	// Every is how often a device deposits again with the witnesses it is
	// connected to, when its head moved since the last deposit there;
	// Settle, how soon after its log grew (Changed), at most once per
	// Settle.
	Every   = 2 * time.Minute
	Settle  = 5 * time.Second
	timeout = 10 * time.Second
	// A deposit on meeting is tried retries times, retryFirst apart at
	// first, doubling.
	retries    = 5
	retryFirst = 200 * time.Millisecond
)

// ErrWitnessed: a witness holds a head of this device's log that the log
// no longer vouches for (truncated, rewritten or restored from an older
// copy). It wraps the audit error naming the entry.
var ErrWitnessed = errors.New("a witness holds a newer or different audit head than this log")

var heldRoot = ds.NewKey("/witness/held")

// answerKey holds the newest answer a witness signed for this device (the
// version 1 protocol kept a bare head at /witness/mine: not read any more,
// as nothing in it shows a witness gave it).
var answerKey = ds.NewKey("/witness/answer")

// conflictRoot holds, per device, the first head it deposited that does not
// extend the head held: evidence of a rewritten log.
var conflictRoot = ds.NewKey("/witness/conflict")

// failedRoot holds, per witness (at most maxFailed), the first answer it
// signed that this device's log did not pass (Answer.Check): a truncation
// or rewrite once detected is never forgotten, whatever later answers say.
var failedRoot = ds.NewKey("/witness/failed")

// maxFailed bounds the failing answers kept (one per witness).
const maxFailed = 16

func failedKey(w peer.ID) ds.Key   { return failedRoot.ChildString(w.String()) }
func heldKey(p peer.ID) ds.Key     { return heldRoot.ChildString(p.String()) }
func conflictKey(p peer.ID) ds.Key { return conflictRoot.ChildString(p.String()) }

// Config wires a Service.
type Config struct {
	Host  host.Host
	Store ds.Batching // this device's store: what it witnesses, its newest answer
	// Witness: this device keeps others' heads (its certificate carries
	// the role anchor or archive).
	Witness bool
	// Admitted: a peer admitted now; IsWitness: an admitted peer whose
	// certificate makes it a witness.
	Admitted  func(peer.ID) bool
	IsWitness func(peer.ID) bool
	// Own is this device's current head (Seq 0: nothing recorded yet);
	// Log reads its log, to check what witnesses hold.
	Own func() audit.Head
	Log *audit.Reader     // nil when the device's log is broken
	Key ed25519.PublicKey // this device's identity key (its log's)
	// Identity signs a witness's answers (this device's identity key, whose
	// peer ID is the host's); Certs is this device's certificate chain
	// (device.crt), carried in each answer so that an answer can be checked
	// offline against the trust roots (CheckWitness). Needed when Witness.
	Identity ed25519.PrivateKey
	Certs    []byte
	// Vet checks a witness's answer before the device uses or keeps it:
	// that its signer is a witness under this device's trust roots at the
	// answer's time, and that time is near this device's clock (so that
	// `audit verify` can use it later, offline). nil: every answer that
	// decodes is used (tests).
	Vet    func(Answer) error
	Logger *slog.Logger
	Now    func() time.Time
}

// Service deposits this device's head with witnesses, and — on a witness —
// keeps others' heads.
type Service struct {
	cfg  Config
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup
	kick chan peer.ID
	grew chan struct{}

	mu       sync.Mutex
	closed   bool               // Close began: handlers take nothing more
	sent     map[peer.ID]uint64 // head seq last deposited per witness
	known    map[peer.ID]uint64 // seq of the head each witness last said it holds
	busy     map[peer.ID]bool   // a deposit from this peer is being handled
	status   audit.Witnessed
	mineSeen uint64 // held seq of the stored kept answer
	mineRank int    // the stored kept answer's rank (rank)
	failed   int    // failing answers kept (failedRoot)
}

// Start registers the protocol and starts the deposit loop; Close stops
// both.
func Start(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, kick: make(chan peer.ID, 16), grew: make(chan struct{}, 1), sent: map[peer.ID]uint64{}, known: map[peer.ID]uint64{}, busy: map[peer.ID]bool{}}
	s.ctx, s.stop = context.WithCancel(context.Background())
	if cfg.Log != nil {
		if a, ok := s.loadMine(); ok {
			err := a.Check(s.ctx, cfg.Log)
			s.mineSeen, s.mineRank = a.Held.Seq, rank(a, err)
			s.status = audit.Witnessed{Peer: a.Witness.String(), Seq: a.Held.Seq, At: a.Time}
			if err != nil {
				s.status.Error = err.Error()
			}
		}
		failed, err := Failed(s.ctx, cfg.Store, cfg.Key)
		if err != nil {
			cfg.Logger.Warn("kept failing witness answers unreadable", "err", err)
		}
		s.failed = len(failed)
		for _, a := range failed {
			if s.status.Error != "" {
				break
			}
			if err := a.Check(s.ctx, cfg.Log); err != nil {
				s.status = audit.Witnessed{Peer: a.Witness.String(), Seq: a.Held.Seq, At: a.Time, Error: err.Error()}
			}
		}
	}
	if cfg.Witness {
		cfg.Host.SetStreamHandler(Protocol, s.handle)
	}
	s.wg.Add(1)
	go s.loop()
	return s
}

// Close stops the service and waits for its goroutines, the deposits being
// handled included (their streams are reset): nothing touches the store
// after it returns.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if s.cfg.Witness {
		s.cfg.Host.RemoveStreamHandler(Protocol)
	}
	s.stop()
	s.wg.Wait()
}

// enter counts one more handler, unless Close has begun.
func (s *Service) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// Met asks for a deposit with p, if it is a witness (call on admission).
func (s *Service) Met(p peer.ID) {
	if !s.cfg.IsWitness(p) {
		return
	}
	select {
	case s.kick <- p:
	default: // the loop's next round reaches it
	}
}

// Status reports the newest witnessed head and any mismatch (nil: no
// witness has answered yet).
func (s *Service) Status() *audit.Witnessed {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status.Seq == 0 {
		return nil
	}
	st := s.status
	return &st
}

// Changed tells the service the log grew: it deposits the new head with
// the connected witnesses within Settle.
func (s *Service) Changed() {
	select {
	case s.grew <- struct{}{}:
	default:
	}
}

func (s *Service) loop() {
	defer s.wg.Done()
	tick := time.NewTicker(Every)
	defer tick.Stop()
	settle := time.NewTimer(Settle)
	settle.Stop() // armed by Changed
	defer settle.Stop()
	var due <-chan time.Time // set while a round after Changed is pending
	for {
		select {
		case <-s.ctx.Done():
			return
		case p := <-s.kick:
			s.wg.Add(1)
			go s.depositSoon(p)
		case <-s.grew:
			if due == nil {
				settle.Reset(Settle)
				due = settle.C
			}
		case <-due:
			due = nil
			s.round()
		case <-tick.C:
			s.round()
		}
	}
}

// round deposits with every connected witness whose copy is older.
func (s *Service) round() {
	for _, p := range s.cfg.Host.Network().Peers() {
		if s.cfg.IsWitness(p) {
			s.deposit(p, false)
		}
	}
}

// depositSoon deposits with p just met, trying again a few times: p may
// still be admitting us when we have admitted it.
func (s *Service) depositSoon(p peer.ID) {
	defer s.wg.Done()
	wait := retryFirst
	for range retries {
		if s.deposit(p, true) {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait *= 2
	}
}

// deposit sends our head to witness p (unless it already has this one and
// force is unset) and checks its answer. It reports whether p answered.
func (s *Service) deposit(p peer.ID, force bool) bool {
	own := s.cfg.Own()
	if own.Seq == 0 {
		return true // nothing to vouch for yet; the loop deposits later
	}
	s.mu.Lock()
	same := s.sent[p] == own.Seq
	s.mu.Unlock()
	if same && !force {
		return true
	}
	s.mu.Lock()
	from := s.known[p]
	s.mu.Unlock()
	var ans Answer
	// At most two exchanges: a witness holding an older head than the one
	// we believed asks for a proof from its own (Want).
	for range 2 {
		var err error
		if ans, err = s.exchange(p, own, from); err != nil {
			s.cfg.Logger.Debug("audit head deposit failed", "peer", p, "err", err)
			return false
		}
		if ans.Want == 0 || ans.Want == from || ans.Want >= own.Seq {
			break
		}
		from = ans.Want
	}
	if ans.Held.Seq > 0 || ans.Conflict != nil {
		s.answered(p, ans)
	}
	s.mu.Lock()
	s.sent[p], s.known[p] = own.Seq, ans.Held.Seq
	s.mu.Unlock()
	return true
}

// exchange deposits own with p, with the proof that it extends entry from
// (0: none), and returns p's checked answer.
func (s *Service) exchange(p peer.ID, own audit.Head, from uint64) (Answer, error) {
	hrec, err := own.Record()
	if err != nil {
		return Answer{}, err
	}
	dep := deposit{Head: hrec}
	if from > 0 && from < own.Seq && own.Root != nil && s.cfg.Log != nil {
		proof, err := s.cfg.Log.Consistency(s.ctx, from, own.Seq)
		if err != nil {
			return Answer{}, err
		}
		dep.From = from
		for _, h := range proof {
			dep.Proof = append(dep.Proof, h[:])
		}
	}
	rec, err := detcbor.Marshal(dep)
	if err != nil {
		return Answer{}, err
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	st, err := s.cfg.Host.NewStream(network.WithNoDial(ctx, "witnesses are met, not dialled"), p, Protocol)
	if err != nil {
		return Answer{}, err
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(timeout))
	w := msgio.NewVarintWriter(st)
	if err := w.WriteMsg(rec); err != nil {
		st.Reset()
		return Answer{}, err
	}
	r := msgio.NewVarintReaderSize(st, maxAnswer)
	raw, err := r.ReadMsg()
	if err != nil {
		st.Reset()
		return Answer{}, err
	}
	ans, err := DecodeAnswer(slices.Clone(raw), own.Key)
	r.ReleaseMsg(raw)
	if err != nil {
		return Answer{}, err
	}
	if ans.Witness != p {
		return Answer{}, fmt.Errorf("%w: %s answered with an answer of %s", ErrAnswer, p, ans.Witness)
	}
	return ans, nil
}

// rank orders answers for keeping: one naming evidence the log does not
// disprove (2) over one the log fails otherwise (1) over one it passes (0).
func rank(a Answer, checked error) int {
	switch {
	case checked == nil:
		return 0
	case a.Conflict != nil:
		return 2
	default:
		return 1
	}
}

// answered checks witness p's signed answer (Vet) and our log against it,
// and keeps it: as the kept answer (answerKey) unless that one ranks
// higher — a failing answer is never replaced by a passing one; among
// answers of one rank below 2 the newest held head wins, at rank 2 the
// first — and, when the log fails it, as p's failing answer (the first,
// of at most maxFailed witnesses).
func (s *Service) answered(p peer.ID, ans Answer) {
	if s.cfg.Vet != nil {
		if err := s.cfg.Vet(ans); err != nil {
			s.cfg.Logger.Warn("witness answer unusable: not kept", "witness", p, "err", err)
			return
		}
	}
	verr := ans.Check(s.ctx, s.cfg.Log)
	if s.ctx.Err() != nil {
		return // closing: a check cut short says nothing of the log
	}
	r := rank(ans, verr)
	s.mu.Lock()
	defer s.mu.Unlock()
	if verr != nil {
		s.status = audit.Witnessed{Peer: p.String(), Seq: ans.Held.Seq, At: s.cfg.Now(), Error: verr.Error()}
		s.cfg.Logger.Error("a witness holds an audit head this log no longer vouches for", "witness", p, "err", verr)
		if s.failed < maxFailed {
			if has, err := s.cfg.Store.Has(s.ctx, failedKey(p)); err == nil && !has {
				if s.cfg.Store.Put(s.ctx, failedKey(p), ans.Raw) == nil {
					s.failed++
				}
			}
		}
	} else if s.status.Error == "" {
		s.status = audit.Witnessed{Peer: p.String(), Seq: ans.Held.Seq, At: s.cfg.Now()}
	}
	if r > s.mineRank || (r == s.mineRank && r < 2 && ans.Held.Seq > s.mineSeen) {
		if s.cfg.Store.Put(s.ctx, answerKey, ans.Raw) == nil {
			s.mineSeen, s.mineRank = ans.Held.Seq, r
		}
	}
}

// handle is a witness's side of a deposit.
func (s *Service) handle(st network.Stream) {
	if !s.enter() {
		st.Reset()
		return
	}
	defer s.wg.Done()
	stop := context.AfterFunc(s.ctx, func() { st.Reset() })
	defer stop()
	p := st.Conn().RemotePeer()
	if !s.cfg.Admitted(p) {
		st.Reset()
		return
	}
	s.mu.Lock()
	if s.busy[p] {
		s.mu.Unlock()
		st.Reset()
		return
	}
	s.busy[p] = true
	s.mu.Unlock()
	// Free p before answering: a device that reads the answer may deposit
	// again at once (with the proof asked for).
	free := sync.OnceFunc(func() {
		s.mu.Lock()
		delete(s.busy, p)
		s.mu.Unlock()
	})
	defer free()
	_ = st.SetDeadline(time.Now().Add(timeout))
	r := msgio.NewVarintReaderSize(st, maxDeposit)
	rec, err := r.ReadMsg()
	if err != nil {
		st.Reset()
		return
	}
	defer r.ReleaseMsg(rec)
	key, err := KeyOf(p)
	if err != nil {
		st.Reset()
		return
	}
	dep, err := decodeDeposit(rec)
	if err != nil {
		s.cfg.Logger.Warn("refused an audit head deposit", "peer", p, "err", err)
		st.Reset()
		return
	}
	h, err := audit.DecodeHead(dep.Head, key)
	if err != nil {
		s.cfg.Logger.Warn("refused an audit head", "peer", p, "err", err)
		st.Reset()
		return
	}
	ab, err := s.keep(p, key, h, dep)
	if err != nil {
		s.cfg.Logger.Warn("could not keep an audit head", "peer", p, "err", err)
		st.Reset()
		return
	}
	free()
	ab.Device, ab.Witness = []byte(p), []byte(s.cfg.Host.ID())
	ab.Time, ab.Certs = s.cfg.Now().UnixNano(), s.cfg.Certs
	ans, err := signAnswer(s.cfg.Identity, ab)
	if err != nil {
		st.Reset()
		return
	}
	if err := msgio.NewVarintWriter(st).WriteMsg(ans); err != nil {
		st.Reset()
		return
	}
	_ = st.Close()
}

// keep stores h for p if it extends what is held, and returns the answer
// (unsigned) of what is held afterwards. A head with a higher entry number
// replaces the held one only with a consistency proof from the held head's
// tree to the new head's (dep, from the held entry); one with a proof that
// fails, or of the held entry number with another hash, is refused and
// kept as evidence (the first such), and every answer carries it. A held
// version 1 head (no tree) is replaced by a newer version 2 head without
// proof: its tree is trusted on first use.
func (s *Service) keep(p peer.ID, key ed25519.PublicKey, h audit.Head, dep deposit) (answerBody, error) {
	old, ok, err := Held(s.ctx, s.cfg.Store, p)
	if err != nil && !errors.Is(err, audit.ErrBadHead) {
		return answerBody{}, err
	}
	conflict, err := s.cfg.Store.Get(s.ctx, conflictKey(p))
	if err != nil && !errors.Is(err, ds.ErrNotFound) {
		return answerBody{}, err
	}
	if _, cerr := audit.DecodeHead(conflict, key); cerr != nil {
		conflict = nil
	}
	refuse := func(why string) (answerBody, error) {
		s.cfg.Logger.Warn("a device deposited an audit head that does not extend the one held: its log was rewritten",
			"peer", p, "held", old.Seq, "deposited", h.Seq, "why", why)
		if conflict == nil {
			if conflict, err = h.Record(); err != nil {
				return answerBody{}, err
			}
			if err := s.cfg.Store.Put(s.ctx, conflictKey(p), conflict); err != nil {
				return answerBody{}, err
			}
		}
		return s.answerOf(old, conflict)
	}
	newer := h.Seq > old.Seq || (h.Seq == old.Seq && old.Root == nil && h.Root != nil && h.Hash == old.Hash)
	switch {
	case !ok:
	case h.Seq == old.Seq && h.Hash != old.Hash:
		return refuse("another entry at the held number")
	case !newer:
		return s.answerOf(old, conflict) // the device's log went back: it learns so from the answer
	case h.Root == nil:
		return s.answerOf(old, conflict) // a version 1 head cannot show it extends the held one
	case old.Root == nil:
		// A version 1 held head signs no tree, so nothing can be proved
		// from it: the first version 2 head's tree is trusted on first use
		// (an inclusion proof of the held entry would prove nothing either:
		// the key holder picks the tree).
	case dep.From != old.Seq:
		a, err := s.answerOf(old, conflict)
		a.Want = old.Seq
		return a, err
	default:
		if err := audit.VerifyConsistency(old.Seq, h.Seq, [32]byte(old.Root), [32]byte(h.Root), dep.proof()); err != nil {
			return refuse(err.Error())
		}
	}
	rec, err := h.Record()
	if err != nil {
		return answerBody{}, err
	}
	if err := s.cfg.Store.Put(s.ctx, heldKey(p), rec); err != nil {
		return answerBody{}, err
	}
	return s.answerOf(h, conflict)
}

func (s *Service) answerOf(held audit.Head, conflict []byte) (answerBody, error) {
	a := answerBody{Conflict: conflict}
	if held.Seq > 0 {
		rec, err := held.Record()
		if err != nil {
			return answerBody{}, err
		}
		a.Held = rec
	}
	return a, nil
}

// Held reads the head a witness's store d holds for device p (ok false:
// none).
func Held(ctx context.Context, d ds.Read, p peer.ID) (audit.Head, bool, error) {
	key, err := KeyOf(p)
	if err != nil {
		return audit.Head{}, false, err
	}
	return readHead(ctx, d, heldKey(p), key)
}

// Conflict reads the evidence a witness's store d holds against device p:
// the first head p deposited that did not extend the head held (ok false:
// none).
func Conflict(ctx context.Context, d ds.Read, p peer.ID) (audit.Head, bool, error) {
	key, err := KeyOf(p)
	if err != nil {
		return audit.Head{}, false, err
	}
	return readHead(ctx, d, conflictKey(p), key)
}

// Mine reads the newest answer a witness signed for this device, kept in
// the store d of the device whose key is key (ok false: none), checking
// the witness's signature (DecodeAnswer); whether the signer is a witness
// is CheckWitness's to say.
func Mine(ctx context.Context, d ds.Read, key ed25519.PublicKey) (Answer, bool, error) {
	raw, err := d.Get(ctx, answerKey)
	if errors.Is(err, ds.ErrNotFound) {
		return Answer{}, false, nil
	}
	if err != nil {
		return Answer{}, false, err
	}
	a, err := DecodeAnswer(raw, key)
	if err != nil {
		return Answer{}, false, fmt.Errorf("the kept witness answer: %w", err)
	}
	return a, true, nil
}

// Failed reads the failing answers kept in the store d of the device whose
// key is key (one per witness, the first each gave that the log did not
// pass), checking each one's signature (DecodeAnswer).
func Failed(ctx context.Context, d ds.Read, key ed25519.PublicKey) ([]Answer, error) {
	res, err := d.Query(ctx, query.Query{Prefix: failedRoot.String()})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var out []Answer
	for e := range res.Next() {
		if e.Error != nil {
			return out, e.Error
		}
		a, err := DecodeAnswer(e.Value, key)
		if err != nil {
			return out, fmt.Errorf("a kept failing witness answer: %w", err)
		}
		out = append(out, a)
	}
	return out, nil
}

func (s *Service) loadMine() (Answer, bool) {
	a, ok, err := Mine(s.ctx, s.cfg.Store, s.cfg.Key)
	if err != nil {
		s.cfg.Logger.Warn("stored witness answer unreadable", "err", err)
		return Answer{}, false
	}
	return a, ok
}

func readHead(ctx context.Context, d ds.Read, k ds.Key, key ed25519.PublicKey) (audit.Head, bool, error) {
	raw, err := d.Get(ctx, k)
	if errors.Is(err, ds.ErrNotFound) {
		return audit.Head{}, false, nil
	}
	if err != nil {
		return audit.Head{}, false, err
	}
	h, err := audit.DecodeHead(raw, key)
	if err != nil {
		return audit.Head{}, false, err
	}
	return h, true, nil
}

// KeyOf is the Ed25519 identity key inside a peer ID (devices' audit logs
// are signed with it).
func KeyOf(p peer.ID) (ed25519.PublicKey, error) {
	pk, err := p.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("peer %s: no key in its ID: %w", p, err)
	}
	raw, err := pk.Raw()
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("peer %s: not an Ed25519 identity", p)
	}
	return ed25519.PublicKey(raw), nil
}
