// Package chat is a conversation: direct or group, built from crdt and e2e.
// A Replica holds one device's copy: it creates signed, encrypted ops and
// applies everyone's, and materialises the conversation — ordered messages
// with replies, edits, deletes and reactions, members and admins, receipts
// and the delivery state of each message, retention.
//
// Rules every replica applies to the same DAG, so all converge:
//   - Authorisation comes from the DAG. An op is judged against the
//     membership its author could see: the valid membership ops in its
//     causal past. Only admins (the creator and whom admins promote) add,
//     remove, promote or set retention; a member may leave; only members
//     send; only a message's author edits or deletes it. Ops that fail stay
//     in the DAG (causality) and count for nothing.
//   - A member is in if some add of it is causally after every removal of
//     it: concurrent add and remove — remove wins, so an offline device
//     cannot silently re-add someone who was removed.
//   - Every membership change starts a new key epoch. The epoch in use is
//     the last valid welcome in the DAG's order; a member about to send that
//     finds it sealed to anyone who is not a member now, or missing a member,
//     starts a new epoch first (two admins removing two people at once).
//   - A revoked sender's ops (per the revoked predicate: the CRL) stand only
//     if an op of an unrevoked author depends on them; receipts, which
//     depend on everything their author had seen, endorse what honest
//     members saw before the revocation.
//   - Deleting a message destroys its plaintext; retention deletes old
//     messages on every replica and keeps only their op IDs.
//
// Known limitation: anyone who was ever a member of an epoch can read that
// epoch's control ops (membership, receipts) — a removed member reads none
// of any later epoch, and a new member gets earlier control keys (never
// message keys) so it can authorise the whole DAG.
//
// A Replica is not safe for concurrent use; its owner serialises calls.
// No I/O, no goroutines, no logging.
package chat
