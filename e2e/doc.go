// Package e2e is medmesh's end-to-end encryption: signed envelopes, key
// epochs, per-sender hash-ratchet chains, signed KEM prekeys and HPKE
// welcomes.
//
// Envelope: deterministic CBOR (internal/detcbor), Ed25519-signed by the
// sender's identity key over every other field, so anyone — relays and
// anchors too — can check it from the sender's peer ID alone, without any
// key material. The op ID is SHA-256 of the exact envelope bytes; decoding
// rejects non-canonical input, so one op has one ID. The sender's hybrid
// logical clock reading is in the signed header (not the ciphertext): every
// replica, including one that cannot read an epoch, must order the DAG the
// same way. So is the sender's urgency bit (Envelope.Urgent, left out of
// the encoding when false), so that relays, carriers and anchors move
// urgent ops first without reading them; the layer that reads the payload
// holds the bit to it (chat refuses an urgent header over a routine
// payload).
//
// Keys of a conversation:
//   - An epoch is a random 32-byte secret, named by the op ID of the welcome
//     that starts it (a welcome's envelope names no epoch; content and
//     control envelopes name their welcome's op ID): no sender picks an
//     epoch's name. A welcome seals the secret with HPKE (MLKEM768-X25519,
//     HKDF-SHA256, ChaCha20-Poly1305) to each holder's current signed
//     prekey (the certificate's KEM key only as a last resort). The HPKE
//     info binds a share to the welcome carrying it — the hash of its
//     signed header (tag, sender, deps, clock) and its public holder list —
//     and to the recipient, so a share lifted into another welcome, or a
//     welcome whose holders were edited, does not open. The welcome also
//     carries a commitment to the secret (Commit): a recipient given a
//     secret other than the committed one gets ErrBadCommit; and one to
//     the epoch's control key (ControlCommit), against which a control key
//     handed on later as history is checked.
//   - From the epoch secret each member derives one chain key per member
//     (the senders of that epoch) and the epoch's control key, then deletes
//     the epoch secret. Message key i of a chain is HMAC(CK_i, 1); the chain
//     moves on with CK_{i+1} = HMAC(CK_i, 2): a leaked chain key does not
//     reveal earlier messages. Receivers keep keys of skipped indexes (out
//     of order delivery is normal in a mesh) for at most MessageKeyWindow.
//     A receiver's chain changes only once a body authenticates (OpenContent
//     derives, tries, then commits), so garbage bodies and huge indexes cost
//     nothing; one op may skip at most MaxSkip keys, and at most
//     MaxSkippedChain skipped keys are kept per chain (the lowest indexes go
//     first) and MaxSkippedTotal in all (the oldest go first), which bounds
//     the persisted key state. A sender's chain never goes back
//     (SendChain.SkipTo after a restart).
//   - Control ops (membership, roles, receipts, retention) are sealed with
//     the epoch's control key. A welcome hands a new member the control keys
//     of earlier epochs — never their secrets or chains — so every member can
//     authorise membership from the whole DAG, yet reads no message sent
//     before it joined. A removed member gets no key of any later epoch.
//   - Prekeys are signed by the identity key, rotate every PrekeyRotation,
//     and their private halves are deleted PrekeyWindow after they stop being
//     current. Together with the chains this is forward secrecy: once the
//     windows have passed, a device's leaked keys open none of the welcomes
//     and envelopes that anchors keep for a long time.
//
// Invariants: no I/O, no goroutines, no logging; errors are the named values
// of errors.go and never carry key material or plaintext.
package e2e
