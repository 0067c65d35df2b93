// Package chat is a conversation: direct or group, built from crdt and e2e.
// A Replica holds one device's copy: it creates signed, encrypted ops and
// applies everyone's, and materialises the conversation — ordered messages
// with replies, edits, deletes and reactions, members and admins, receipts
// and the delivery state of each message, retention.
//
// # The authorisation rule
//
// One rule decides every op, computed from the DAG alone, so every replica
// holding the same ops decides the same (auth.go). Nothing a sender says
// about the group is taken on its word: holder lists, epochs and clocks
// are checked against what the DAG proves.
//
// Epochs. A key epoch is named by the op ID of the welcome that started
// it: no sender picks an epoch's name, so nothing can collide with or
// poison another epoch. Content and control ops name their epoch; an op
// counts only if that welcome is authorised, in the op's causal past and
// held by the op's sender.
//
// Pass 1 judges each op by its causal past alone, in causal order:
//   - the root welcome is the creator's (the tag binds conversation ID and
//     creator), and the create op follows it directly;
//   - a welcome is by a member at its causal point, and its public holder
//     list equals the membership there — any member may rekey (after a
//     removal, or when its share of a welcome did not open), nobody may
//     rekey to a set other than the members;
//   - only admins (the creator, whom admins promote) add, remove, promote
//     or set retention; a member may leave; only members send; only a
//     message's author edits or deletes it;
//   - a member is in if some add of it has every removal of it in its
//     past: concurrent add and remove — remove wins, so an offline device
//     cannot silently re-add someone who was removed.
//
// Effective removals. Of the removals and leaves pass 1 authorises, leaves
// are effective; removals are taken in order of their author's seniority
// (the creator first, then by the first promotion: shallower in the DAG,
// then op ID — never by a timestamp, which a sender chooses), and one is
// effective unless its author was removed by an effective removal
// concurrent with it. So of two admins who remove each other concurrently
// the senior's removal stands, and a removed admin's backdated changes do
// not; the group keeps an admin unless all admins left.
//
// Pass 2 is pass 1 with these also void: an op by a member removed by an
// effective removal concurrent with the op (neither in the other's past;
// the removal itself excepted); two content ops of one sender in one
// (epoch, chain index) — equivocation: both void, the sender flagged; ops
// of a revoked sender no op of an unrevoked author depends on. Membership
// at every point is recomputed from the ops pass 2 keeps.
//
// The epoch a member sends in is one of the welcomes that may be in use at
// its heads: authorised, held by exactly the members there, with every
// authorised change of who is a member in its causal past; if there is
// none (a removal, an add, concurrent changes, a share that did not open)
// the member starts a new epoch first. The preferred of several is the
// highest (sort key, op ID) — all of them reach exactly the members.
//
// What is never trusted before it is judged:
//   - a welcome is opened only once it is authorised — or, on a device that
//     cannot yet read the membership in its past (a new member, before it
//     holds those epochs' control keys), to learn them; keys of a welcome
//     then judged unauthorised are dropped unused. A share that does not
//     open, or opens to a secret other than the welcome's commitment,
//     flags the issuer and makes this device rekey. Control keys handed
//     on as history are candidates until one decrypts an op of its epoch;
//   - a content op is decrypted, and its sender's chain moved, only if its
//     sender may write in its epoch; chain state changes only once the
//     body authenticates, skipped keys are bounded per chain and in all
//     (e2e), and the chains of an epoch out of use for longer than
//     e2e.MessageKeyWindow are dropped by Expire;
//   - an op by a device no authorised op in its past ever added is refused
//     when its dependencies arrive: not stored, not served, its keys never
//     derived — kept only as a content-less node (a bounded number per
//     sender) if an op waiting for it needs it for causality. Ops waiting
//     for dependencies are bounded in bytes, per sender and in all (crdt).
//
// A message this device showed that a later op voids (a removal that
// turns out concurrent, equivocation, a revocation) is not removed
// silently: State lists it as Withdrawn, with the reason, and without its
// text. Withdrawn entries depend on what this device had shown; everything
// else in State depends on the DAG only.
//
// Other rules: an unreact removes only the remover's own reactions in its
// causal past; an op's sort key is never earlier than its dependencies'
// (crdt); deleting a message destroys its plaintext; retention deletes old
// messages on every replica and keeps only their op IDs.
//
// Known limitations: anyone who was ever a member of an epoch can read that
// epoch's control ops (membership, receipts) — a removed member reads none
// of any later epoch, and a new member gets earlier control keys (never
// message keys) so it can authorise the whole DAG. Effective removals are
// decided from pass 1; in a DAG where a removal's author is itself made
// non-admin only by a voided promotion, pass 2 still counts that removal
// (deterministic on every replica, but generous). A device that refused an
// op keeps only its ID's absence: if a later removal of its remover makes
// it valid, the device fetches it again only when an op depending on it
// arrives.
//
// A Replica is not safe for concurrent use; its owner serialises calls.
// No I/O, no goroutines, no logging.
package chat
