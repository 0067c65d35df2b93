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
//     that dependant's time (never below its own dependencies' keys). So a
//     device whose clock runs hours fast is pinned to the end of a
//     conversation only until the first colleague's device answers it (an
//     automatic delivery receipt does), and replicas agree because keys
//     depend on the DAG only. Such ops are flagged, as are ops stamped more
//     than MaxSkew ahead of local time on arrival. The local clock adopts a
//     remote timestamp only within MaxSkew of local time, so one bad clock
//     does not drag everybody's clock forward.
//   - Memory is bounded: at most MaxPending ops wait for dependencies; the
//     oldest is evicted (and can be fetched again by sync).
package crdt
