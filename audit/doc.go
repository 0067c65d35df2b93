// Package audit is a device's tamper-evident audit trail: an append-only
// log of security- and care-relevant events (sent, received, read,
// acknowledged, photo viewed, edited, deleted, member added or removed,
// unlocked, locked, failed unlock, CRL applied, wiped, exported), each
// entry hash-chained to the one before it and signed by the device's
// Ed25519 identity key.
//
// An entry holds its sequence number (1, 2, 3… with no gaps), a time that
// strictly increases along the chain, its kind, the identifiers it concerns
// (conversation ID, op IDs, a peer ID, a serial or CRL number), the hash of
// the entry before it (zero for the first) and the device's public key. It
// never holds message text, photo bytes, titles or names: callers pass IDs
// only, and the IDs type has no field that could carry more. An identifier
// longer than MaxID (one a colleague chose) is recorded as its digest
// (BoundID: "sha256:<hex>"), never as its raw bytes. Times lie in
// [MinTime, MaxTime] (1970 to 2262, the range of int64 Unix nanoseconds):
// a clock outside it, or not after the last entry, stamps the last
// entry's time + 1 ns, so an honest log always verifies.
//
// Encoding: the entry's body is deterministic CBOR (internal/detcbor);
// its hash is SHA-256(EntryDomain || body) and its signature is Ed25519
// over (SigDomain || hash), verified under ZIP-215 rules. The log's head
// (the last entry's seq, hash and time, and — version 2 — the root of the
// RFC 9162 Merkle tree whose leaves are the entries' hashes) is signed the
// same way over (HeadDomain || head body); version 1 heads (no root) still
// verify. A consistency proof (Reader.Consistency, VerifyConsistency; RFC
// 9162, 2.1.4) shows that a newer head's tree extends an older head's
// tree, in at most ceil(log2 n)+1 hashes (15, 480 bytes, from 5 to 10,005
// entries), without revealing any entry: what a witness (package witness)
// needs to keep only heads that extend the one it holds. An inclusion
// proof (unexported, kept for the tests that show this) shows one entry in
// a head's tree; it is not enough for a witness, as the key holder chooses
// the tree a head signs. Verify and Vouched check a head's root against
// the tree of the stored entries, so a head whose tree is not the log's
// fails as a head whose hash is not.
// The tree's frontier (one hash per set bit of the entry count) is stored
// with the head in the same batch; a log without one is rebuilt on Open.
//
// What verification detects: an edited entry (hash or signature), two
// entries swapped or a sequence gap (seq and prev), a deleted middle entry
// (missing), an entry of another device's log (key, signature), a forged
// signature, entries stored beyond the head, and a deleted head: the
// log's key space is listed, so entries left without a head are found and
// the missing ones named, rather than passing as an empty log. A truncated tail is detected against the stored head unless
// the store was rewritten by someone holding the device key; against such
// a holder only a head kept elsewhere (Head, exported with `medmesh audit
// head`) tells: Verify with that head reports the entries missing.
//
// Storage: the log lives in a go-datastore (the device's encrypted store:
// nothing of it is written in the clear); one append is one batch holding
// the entry and the new head, so a crash leaves either both or neither.
// Key names carry no order (the store hashes them), so entries are read by
// seq. Log is safe for concurrent use: appends are serialised by one mutex,
// held across the batch commit. The package starts no goroutines and logs
// nothing.
package audit
