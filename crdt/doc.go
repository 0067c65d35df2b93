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
//   - Clocks lie. An op's sort key is its HLC timestamp clamped to at most
//     MaxSkew beyond the newest of its dependencies' keys, so a device whose
//     clock runs hours ahead cannot pin its ops to the end of a conversation
//     (the clamp depends on the DAG only, so replicas agree). An op stamped
//     more than MaxSkew ahead of local time on arrival is flagged for the
//     user. The local clock adopts a remote timestamp only within MaxSkew of
//     local time, so one bad clock does not drag everybody's clock forward.
//   - Memory is bounded: at most MaxPending ops wait for dependencies; the
//     oldest is evicted (and can be fetched again by sync).
package crdt
