// Package crdt is the conflict-free core of a conversation: a causal DAG of
// operations with content-hash IDs, a hybrid logical clock, a bounded buffer
// for operations whose dependencies have not arrived, and the replicated
// types chat is built from (ordered log, last-writer-wins register,
// observed-remove set, per-device max register).
//
// Invariants:
//   - No I/O, no goroutines, no logging, no cryptography beyond hashing the
//     caller does: the same code runs in nodes and in simulations.
//   - An op is applied only after all its dependencies; the applied set is
//     always causally closed. Duplicates are ignored; an op that names itself
//     or a dependency twice is refused.
//   - Materialisation is deterministic: it depends only on the set of ops,
//     never on arrival order or on the local clock. Ops are ordered by a
//     linear extension of the DAG (an op always after what it depends on),
//     concurrent ops by (sort key, op ID).
//   - Clocks lie. An op's sort key is its HLC timestamp, unless a direct
//     dependant by another author — who had seen it — is stamped more than
//     MaxSkew earlier: then the op's clock ran ahead, and its key drops to
//     that dependant's time. So a device whose clock runs hours fast is
//     pinned to the end of a conversation only until the first colleague's
//     device answers it (an automatic delivery receipt does), and replicas
//     agree because keys depend on the DAG only. Such ops are flagged, as
//     are ops stamped more than MaxSkew ahead of local time on arrival. The
//     local clock adopts a remote timestamp only within MaxSkew of local
//     time, so one bad clock does not drag everybody's clock forward.
//   - An op's sort key is always above its dependencies' keys. An op stamped
//     before a dependency's key (backdated, to display before what it
//     answers) is clamped, not refused: its key becomes just after the
//     greatest dependency key (one logical tick; the next millisecond when
//     the counter is full), and it is flagged. An op stamped exactly at
//     that key is moved the one tick but not flagged: it is the answer
//     that pulled a fast op down to its own time.
//   - Memory is bounded: at most MaxPending ops, MaxPendingBytes bytes of
//     bodies and MaxPendingPerAuthor bytes (and, when MaxPending ≥ 64, an
//     eighth of MaxPending ops) from one Op.Author wait for dependencies.
//     An author over its budget loses its own oldest buffered ops, so one
//     author's flood cannot push out another's; over the other
//     bounds the oldest overall go. Evicted ops are forgotten (sync fetches
//     them again); an op larger than a byte budget is not buffered
//     (ErrPendingFull).
//   - Admission: DAG.Admit, when set, decides for each op once all its
//     dependencies are present: apply it in full, apply it as a stub (ID,
//     deps, author, time, no body — Stub reports it, across restarts), or
//     refuse it: not applied, not stored (ErrRefused), while the ops that
//     wait for it stay buffered and it is Missing again. A refusal does not
//     stop other ops the same Add unblocks. A retention-deleted op differs
//     from a stub by having no author either. Admission is the caller's
//     policy: replicas that decide alike converge.
//   - An observed-remove set's remove covers the (element, tag) pairs it
//     names: naming the tag of another element's add removes nothing.
package crdt
