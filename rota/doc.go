// Package rota is the on-call rota of a site: on-call roles ("Cardiology
// registrar on call"), who may hold each (a certificate role), their
// escalation chains, and who holds each now — a CRDT of signed ops, pure
// (no I/O, no goroutines, no logging, no clock of its own).
//
// Ops (Op, encoded by Sign, read back by Decode) are signed with the
// author's device key (Ed25519 over Domain ‖ deterministic CBOR body, ZIP-215
// verification); the signer's peer ID embeds the key, so Decode alone
// checks the signature. What an op may do is judged at view time against
// the signer's certificate as the caller knows it (Authority):
//
//   - define (or update) a role: only staff whose certificate carries
//     AdminRole, of the role's site. Of the definitions whose signer the
//     Authority vouches for now, the greatest (Seq, op ID) wins; Seq is one
//     more than the standing definition the author had seen, so a later
//     update always wins over what it saw. Each signer keeps only its own
//     greatest definition, so an admin (or a thief with an admin's
//     device) cannot push another admin's out with many; once it is
//     revoked its definitions no longer stand nor count towards Seq.
//   - take: the signer becomes holder; only staff whose certificate
//     carries the role's Requires, of the role's site.
//   - hand over: to a named colleague whose certificate carries Requires;
//     the signer must carry Requires or AdminRole.
//   - release: the role has no holder; the signer must carry Requires or
//     AdminRole.
//
// Holders are a multi-value register: each take, hand-over and release
// names the holder ops it has seen (Seen); the current holders are the
// valid holder ops no valid later op has superseded. One signer's ops
// also supersede one another by (effective time, op ID): an op's
// effective time is its Time pulled down to just before the Time of any
// valid op naming it, so a clock running ahead cannot make a signer's
// earlier op outrank the later one that names it (nor leave a compacted
// mark in the future). Compacted ops keep their Seen (at most maxFollows),
// so the chain from a later op to a signer's mark survives the ops
// between; a valid op superseded only by its own signer's ops or mark
// whose chain names ops not yet held is kept (one per signer) until the
// chain arrives, so a take stamped back by a clock set back is judged
// the same whatever order the ops arrive in (redteam10). After a partition two
// holders may exist: both are returned and the role is flagged Split, until
// someone takes, hands over or releases having seen both.
//
// Invariants:
//   - The view depends only on the set of ops held and the Authority, never
//     on the order they arrived in (property-tested over permutations).
//   - A holder op is judged only against a definition that stands: while
//     none does (none arrived yet, or its definers were revoked or
//     expired) it waits in the pending queue, within its signer's share —
//     refused at once if no definition held could allow it — and is
//     judged, kept or dropped, when one stands again; it never enters a
//     role unjudged (redteam10).
//   - Ops of signers the Authority does not vouch for now (unknown, revoked,
//     expired, lacking the role, another site) are ignored: they neither
//     hold nor supersede. A holder the Authority does not vouch for (a
//     revoked colleague) is not returned.
//   - Sizes are bounded: MaxOpSize per op, MaxRoles roles, MaxChain roles
//     in a chain, MaxSeen superseded ops named per op, MaxLive unsuperseded
//     holder ops per role, MaxDefs definitions kept per role (one per
//     signer), MaxPending ops waiting for their role's definition, of
//     which MaxPendingPerSigner from one signer. When MaxRoles roles are
//     held, a new definition evicts a role no vouched-for definition
//     stands for (its definers revoked), so a revoked admin's roles do
//     not fill the site for good. Compact drops superseded ops and
//     remembers their IDs (at most MaxGone per role, oldest forgotten
//     first) so a replayed superseded op is not taken again; IDs a
//     compacted op named that never arrived are charged to its signer, at
//     most MaxNamedPerSigner each (its own oldest forgotten first), so
//     made-up IDs in Seen cannot push out what others superseded.
//   - Compaction only drops an op superseded by an op the Authority vouches
//     for at that moment; if that signer is revoked later, the role is left
//     without the dropped holder rather than handed back to it.
package rota
