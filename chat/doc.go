// Package chat is a conversation: direct or group, built from crdt and e2e.
// A Replica holds one device's copy: it creates signed, encrypted ops and
// applies everyone's, and materialises the conversation — ordered messages
// with replies, edits, deletes and reactions, members and admins, receipts
// and the delivery state of each message, retention.
//
// # The authorisation rule (auth.go)
//
// One rule decides every op, computed from the DAG alone, so every replica
// holding the same ops, and reading the same control ops, decides the
// same. Nothing a sender says about the group is taken on its word: holder
// lists, epochs and clocks are checked against what the DAG proves.
//
// Epochs. A key epoch is named by the op ID of the welcome that started
// it: no sender picks an epoch's name, so nothing can collide with or
// poison another epoch. Content and control ops name their epoch; an op
// counts only if that welcome is authorised, in the op's causal past and
// held by the op's sender.
//
// Membership. Each op is judged against the membership of its causal
// past, in causal order:
//   - the root welcome is the creator's first (lowest op ID; the tag binds
//     conversation ID and creator), and the create op follows it directly,
//     naming exactly its holders;
//   - a welcome is by a member at its causal point, and its public holder
//     list equals the membership there — any member may rekey (after a
//     removal, or when its share of a welcome did not open), nobody may
//     rekey to a set other than the members;
//   - only admins (the creator, whom admins promote) add, remove, promote
//     or set retention, and an admin removes only admins junior to it
//     (seniority: the creator first, then by first promotion — shallower in
//     the DAG, then op ID; never a timestamp, which a sender chooses), so no
//     admin can strip the creator or a senior — unless the trust has
//     revoked it (a stolen creator's phone must not keep the keys: any
//     admin may remove a member the replica knows revoked, and devices
//     that are admins do so as the CRL arrives); a member may leave; only
//     members send; only a message's author edits it, and only a message in
//     the edit's causal past;
//   - a delete is sealed in the root epoch (every member holds it or gets
//     it as history) and judged by authorship alone — its author's, of a
//     message in its past — so whether a message was deleted never depends
//     on which epochs a device held nor on later removals; its plaintext is
//     destroyed at once;
//   - a member is in if some add of it has every removal of it in its
//     past: concurrent add and remove — remove wins, so an offline device
//     cannot silently re-add someone who was removed.
//
// Effective removals. A removal voids its target's ops that are concurrent
// with it (neither in the other's past; this is what stops a removed
// member's backdated welcomes, adds and posts). Which removals take effect
// is decided to a fixed point: starting from none, every op is judged, then
// all valid leaves, or else the valid removal by the most senior author,
// become effective; and again until none is left. A removal whose author
// a more senior removal voids therefore never takes effect. Also void: two
// content ops of one sender in one (epoch, chain index) — equivocation:
// both, and the sender is flagged; ops of a revoked sender no op of an
// unrevoked author depends on (Endorsed; stubs kept for refused non-members
// do not count). This device's own ops never depend on such an op — its
// parents skip it — so handing us a stolen phone's op cannot make our next
// receipt endorse it.
//
// The epoch a member sends in is one of the welcomes that may be in use at
// its heads — all of them, however many: authorised, held by exactly the
// members there, with every authorised change of who is a member in its
// causal past; if there is none (a removal, an add, concurrent changes, a
// share that did not open) the member starts a new epoch first. Concurrent
// changes need not wait for someone to send (Heal, heal.go): when every
// admin who changed the members has rekeyed after its change yet no epoch
// is in use, the member with the lowest peer ID among those holding every
// latest epoch rekeys with history — so a member added concurrently with
// another admin's rekey reads that epoch's control ops. The
// preferred of several is the highest (sort key, op ID). An op depends on
// at most 64 heads: past that, authorised membership ops and welcomes go
// first, so nobody making many heads keeps a removal out of its past.
//
// What is never trusted before it is judged:
//   - a welcome is opened only once it is authorised — or, on a device that
//     does not yet hold a verified control key of every authorised welcome
//     in its past (a new member), to learn them; the chains of a welcome
//     then judged unauthorised are dropped unused (its control key stays:
//     control ops of an unauthorised epoch count for nothing, and reading
//     them keeps this device's judgement the same as one that opened it in
//     time). A share that does not open, or opens to a secret other than
//     the welcome's commitment, flags the issuer and makes this device
//     rekey. History (control keys of epochs the recipient did not hold,
//     never message keys) names only epochs in the welcome's own past, and
//     a key is taken only if it matches the control-key commitment that
//     epoch's welcome published;
//   - a content op is decrypted, and its sender's chain moved, only if its
//     sender may write in its epoch and it is neither void nor equivocal;
//     chain state changes only once the body authenticates, skipped keys
//     are bounded per chain and in all (e2e), and the chains of an epoch
//     out of use for longer than e2e.MessageKeyWindow are dropped by
//     Expire;
//   - an op whose author is not a member at its causal point (never added,
//     or removed in its past) is refused when its dependencies arrive: not
//     stored, not served, its keys never derived — kept only as a
//     content-less node (a bounded number per sender) if an op waiting for
//     it needs it for causality, and never a dependency of ours. Ops waiting
//     for dependencies are bounded in bytes and count, per sender and in
//     all (crdt); anchors bound what they carry per sender (mesh).
//
// A member that cannot read a control op of an authorised epoch sealed to
// it (its share did not open, its prekey was gone) may be missing a change
// of who is a member: it sends nothing (ErrBlind) — no message, no new
// epoch sealed to the members it believes in — until it can read it.
//
// A message this device showed that a later op voids (a removal that
// turns out concurrent, equivocation, a revocation) is not removed
// silently: State lists it as Withdrawn, with the reason, and without its
// text. Withdrawn entries depend on what this device had shown; everything
// else in State depends on the DAG only.
//
// # Receipts (receipts.go)
//
// Delivered and read receipts are cumulative: one op of device p at
// level L (Delivered or Read) covers a causal past — its own, if Past is
// set (p holds everything in it), and that of each op it names in Heads,
// the named op included. A delivered receipt sets Past and names the heads
// its MaxDeps-capped deps leave out; a read receipt names the messages the
// user read, and so covers exactly them and their past, never a later or
// concurrent message the device holds. Except lists the messages in the
// cover that p holds but cannot read (a share that did not open, an
// expired key): an op any cumulative receipt of p excepts counts for p
// only where a receipt of p names it in Heads — so an honest device never
// names in Heads an op it cannot read (it names that op's dependencies
// instead). A device holding more unreadable messages than one receipt
// may except (any member can make that many) makes explicit receipts
// instead, naming in Targets each readable message not yet at the level,
// so no member can stop another's receipts. A message's level for p is
// the highest of p's explicit receipts naming it (Targets; acknowledgements
// are always explicit, per message, and receipts made before cumulative
// ones are in DAGs) and of p's valid cumulative receipts covering it; it
// counts only if p was a recipient (a member when it was sent, not its
// sender). Validity is the rule above, unchanged: a receipt of a
// non-member is refused, one concurrent with its sender's removal is void,
// a revoked device's stands only if endorsed. A receipt endorses (the
// revoked-sender rule) what any op does — its deps and their past — so a
// cumulative receipt endorses exactly what an explicit one did; ops named
// in Heads beyond its deps are covered, not endorsed. Honest devices name
// only ops they hold and can read; what a sender says it has is its word,
// as it always was.
//
// # Patients
//
// A conversation may be about a patient (package patient: NHS number with
// a valid check digit, name, date of birth). A patient op sets, corrects
// or clears it; any member may make one. It is a control op, sealed in
// the epoch the members hold at its causal point (a new one first if
// membership changed), so the patient is only ever inside encrypted
// payloads — never in an envelope header, a tag or an error — every
// member reads it, a member added later reads it through history, and a
// member removed reads no correction made after its removal. The patient
// shown is that of the last valid patient op in the conversation's order
// (causal order, concurrent ops by sort key then op ID): a correction wins
// over every patient op it saw, and concurrent corrections resolve the
// same way on every replica. A payload whose patient fails
// patient.Patient.Validate is refused by every replica alike.
//
// # On-call role link
//
// A conversation addressed to an on-call role (package rota) carries a
// role op (kind 18) made with it by the creator: the role's ID and its
// display name at creation. Like the patient link it is a control op,
// only inside encrypted payloads; only an admin may set or clear it, and
// the last valid role op in the conversation's order wins. Urgent
// escalation reads it to find the role's chain.
//
// # Urgency in the header
//
// An urgent text message, an escalation and an acknowledgement that names
// an urgent message (or one known from an escalation's quote) are urgent:
// their payload says Urgent, and so does their envelope's signed header
// (e2e.Envelope.Urgent), which relays, carriers and anchors move first.
// So is the welcome an escalation starts (its targets cannot read the
// escalation without it); a welcome has no payload to hold the bit to,
// and the mesh's per-sender allowance bounds what an admin gains by
// marking others. No other kind may be urgent. A replica refuses an op
// whose header is urgent over a routine payload (ErrUrgencyMismatch): a
// routine op never rides as urgent. An urgent payload under a routine
// header is taken and shown urgent: it only crawls, and it is how every
// urgent op was sealed before the header had the bit.
//
// # Urgent escalation (escalate.go)
//
// An urgent message wants an explicit acknowledgement within AckWithin
// (DefaultAckWithin, or MinAckWithin to MaxAckWithin, whole seconds),
// carried in its sealed payload. An escalation op (kind 19, a control op)
// records step k of message M to colleagues T, with a label. Who may
// escalate: an admin (the creator of a conversation addressed to a role
// is one) — an escalation makes members, as an add does, so a plain
// member may not (it could bring back someone an admin removed, or a
// stranger nobody can seal to), nor anyone removed (a removal voids the
// escalations concurrent with it, as it voids everything else of its
// target); and no target the replica knows revoked. The rule judges only what every replica
// that reads the escalation holds — M's header (sender, time), the op's
// own payload and control ops, never M's sealed content — so every replica
// decides the same: M is a content op in the op's past; the op's time is
// at or after M's time plus the AckWithin it quotes; step 1, or a valid
// step k-1 of M in its past at least AckWithin before it, and no step of
// k or more in its past; no valid
// acknowledgement of M (by anyone but its sender) in its past; 1 to
// MaxEscalationTargets sorted distinct targets; step at most
// MaxEscalationSteps. Concurrent escalations of one step all stand; the
// standing one (Message.Escalations) is the earliest by its time, then the
// lowest op ID, so the next holder is alerted once and one signed later on
// old deps does not take the step over. "Time" in these rules is an op's
// own signed time (raised to its sort key if it was stamped before its
// dependencies), never its sort key as a dependant stamped in the past
// pulls it down: a plain member's backdated receipt neither moves a
// deadline (Message.Sent, Deadline) nor voids an escalation (redteam10).
//
// The op's time is its escalator's word, and a clock set ahead (within
// the DAG's MaxSkew) would let it escalate at once. So, beside the rule
// above, a device takes an escalation in only once its own clock has
// reached the op's time less EscalationSkew (10 s): one stamped further
// ahead is refused for now and judged again (State re-judges everything)
// when the clock gets there. The deadline then holds, to within
// EscalationSkew, by the receiving device's clock, which the escalator
// cannot move; and the clock decides only when an escalation stands,
// never whether: once every replica's clock has passed the op's time,
// all hold the same valid set, whatever order and times the ops came in. An acknowledgement concurrent with an
// escalation leaves both valid: the message shows acknowledged and that
// step, and no later step can be made.
//
// The colleagues of a valid escalation become members (an add: concurrent
// with a removal of them, the removal wins; the escalator starts a new
// epoch sealed to them), at most MaxEscalationSteps steps of
// MaxEscalationTargets each, as visibly as an add: every member sees
// "escalated to …". They get
// control keys as history but, as any new member, never message keys:
// the escalation op carries M's text, urgency and AckWithin as a quote,
// which they read as M's text (Message.QuotedBy names the escalator) and
// may acknowledge. The quote is its escalator's word, as a receipt is: a
// device that reads M and finds the quote differs flags the escalator.
// Escalate checks what a well-behaved device must: readable, urgent,
// unacknowledged, deadline passed, the next step, keys for the targets.
//
// A message of this device that retention deletes before any recipient
// read it is listed in State.ExpiredUnread (while the replica runs).
//
// Other rules: an unreact removes only the remover's own reactions in its
// causal past; an op's sort key is never earlier than its dependencies'
// (crdt); retention deletes messages older than the setting by their own
// signed time (not a sort key others can pull down) on every replica and
// keeps only their op IDs. A message is kept for the setting in force when
// it was sent — the newest valid retention op in its causal past — so a
// setting never reaches history written before it: an admin removed
// concurrently with his retention op (void only once the removal arrives)
// cannot wipe the history on the replicas his op reaches first.
//
// Known limitations: anyone who was ever a member of an epoch can read that
// epoch's control ops (membership, receipts) — a removed member reads none
// of any later epoch, and a new member gets earlier control keys (never
// message keys) so it can authorise the whole DAG. The rule is a function
// of the DAG and of the control ops a device can read: a member whose
// removal turned out void (a more senior removal of its remover) lacks the
// control keys of the epochs made while it looked removed until the next
// rekey hands them on. A sender honours the removals it can see: one made
// effective only by information that arrives later (a concurrent senior
// removal) does not retract what was already written. A device that refused
// an op fetches it again only when an op depending on it arrives.
//
// A Replica is not safe for concurrent use; its owner serialises calls.
// No I/O, no goroutines, no logging.
package chat
