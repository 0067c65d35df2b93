// Package mesh moves envelopes between devices: one gossipsub topic per
// conversation (its opaque tag) and one inbox topic per device for
// welcomes, validators that need no decryption, anti-entropy sync over
// /medmesh/sync/1 with range-based set reconciliation (recon.go, a pure
// state machine the simulator drives unchanged), tag offers, and
// store-and-forward for anchors, which keep ciphertext they cannot read.
//
// Invariants: a forged or malformed envelope never reaches storage; every
// stream has a deadline and a size limit; peers get stable error codes, not
// our error strings; every goroutine stops on Close.
package mesh
