// Package mesh moves envelopes between devices: one gossipsub topic per
// conversation (its opaque tag) and one inbox topic per device for
// welcomes, validators that need no decryption, anti-entropy sync over
// /medmesh/sync/8 with range-based set reconciliation (recon.go, a pure
// state machine the simulator drives unchanged), tag offers, and
// store-and-forward for anchors, which keep ciphertext they cannot read,
// and for carriers: admitted devices that carry, in a small bag, sealed
// envelopes of conversations they are not in.
//
// Sync/8 is sync/7 reconciling in causal-key order (recon.go): ranges
// follow the ops' signed clocks, so the ops two devices lack of each other
// — those written while they were apart — lie together at the end, and a
// session lists about them alone rather than their neighbours in every
// range. Sync/7 peers do not speak it (their bounds are ID prefixes).
//
// Sync/7 is sync/6 with urgent sessions: an anchor that takes in an urgent
// op opens one at once with each site peer (sites.go, urgentSites); its
// offer says so and lists only those conversations (one page, at most 64),
// the answer only those of them the peer holds; instead of reconciling a
// conversation the initiator lists its urgent ops (at most 16), and the
// peer fetches those it lacks and their missing direct dependencies (one
// more batch; the rest comes in routine rounds), waiting on no other
// session's claims; both sides pace its control frames urgent across the
// site link (the first 8 KiB).
//
// Sync/6 is sync/5 for envelopes whose signed header may mark them urgent
// (urgent.go): listed keys carry the bit, and the hand phase lost its
// unverifiable per-entry urgent flag. Sync/5 is sync/3 with carriage (carry.go; sync/4 had it too, but
// reconciled carried tags). An offer says whether its side carries (it is
// no anchor and Config.Carry is set: on by default in a device). When
// either side carries, the initiator opens a hand phase after the tags:
// each side in turn lists what it would hand the other — tag, op ID,
// copies per entry (urgency is in the envelope), at most 1,024 — the
// other takes those it lacks, the giver sends them (4 per frame, only
// those taken; anything else counts against it and ends the session) and
// the taker answers which it kept. Listed are: to a peer whose offer names a tag
// the giver carries (a member), or to an anchor, what the giver carries
// of it (a delivery, no copies change hands); to its recipient, a welcome
// of ours under its inbox; to a peer that carries, copies of our ops and
// of carried ones. Binary spray-and-wait: an op's origin starts with
// CarryCopies (8) copies and hands half at each handover to a carrier; a
// carrier with n > 1 hands on n/2, with 1 waits for a member; copies are
// taken off (and stored: they survive a restart) when the taker takes
// them, and given back for what it did not keep. An entry is listed to a
// peer once as a copy and once as a delivery (a delivery the member
// refused, from a sender it does not know yet, again). A carrier offers
// the tags it carries only to anchors (which adopt them), marked as
// such; no tag either side carries only is reconciled, and a carrier
// fetches nothing of one. The bag: CarryQuota (1 MiB), an expiry CarryTTL (7 days)
// after the envelope's signed time (a future time counts as now), one
// origin at most CarryShare (a quarter) of the quota, oldest first; full,
// it drops its oldest non-urgent envelope, its oldest urgent one only for
// an urgent newcomer. The taker checks every envelope as gossip does
// (canonical, signed, a known sender, not revoked, of the tag handed or
// a welcome for that inbox) and caps the copies at its own CarryCopies.
// A carrier never holds a key. It learns what an anchor learns: the tags
// it is handed (and that peers offer), sizes, times, and from the
// envelope headers the sender ID, kind, epoch, chain index, deps and
// clock, and whether it is urgent. Sync/6 peers do not speak sync/7 (they
// would refuse the urgent offer's key as unknown), nor sync/5 peers sync/6
// (urgent envelopes): every device of a site runs one version (protocol IDs change with the wire format).
//
// What a sender can know: a carrier's answer in the session names the
// ops it kept; the sender records its own among them as held by that
// device (Holder.Held: the message shows "held", here meaning that a
// colleague's device carries it, which an anchor's acknowledgement also
// means). It cannot know whether the carrier still holds it (quota, TTL,
// its origin share may drop it later), to whom it was handed on, or
// whether it reached a member: only delivered receipts say that.
//
// Sync/3 (sync.go) is sync/2 with each op ID listed in reconciliation
// carrying its causal key (the sender's clock from the signed header), so
// that a fetch goes in causal order across batches and the DAG need not
// buffer, or drop and refetch, ops whose dependencies come in a later
// batch; two sessions of one device do not fetch the same op at once —
// a claim on an op lapses after 5 s without a complete answer, at once
// on an answer lacking an ID asked for, and a session finding ops
// claimed waits (at most 5 s) and takes over the rest. A fetch takes only
// envelopes whose IDs it asked for in that batch (anything else counts
// against the peer and ends the session), of the session's tag (or
// welcomes in a holder's inbox); a carrier refuses revoked senders, as
// gossip does. A peer runs at most 2 sessions with us at once (more are
// reset unread); a session records at most 2^17 needed IDs, and a capped
// need brings another round at once.
// Sync/2: both sides offer the tags they hold, each with the
// fingerprint of its op-ID set, in pages of 1,024 (every page but the last
// full, ascending, 16-byte tags; at most 65,536), then the initiator
// reconciles the tags both offered whose fingerprints differ, one at a
// time, each at most once: recon rounds, its wants, the responder's wants
// (an idle pair exchanges offers only). Per session
// each side reads at most MaxRounds+1 recon frames for a tag (the
// initiator ends reconciliation at MaxRounds and fetches what it learnt;
// another round goes on from there), 64 + 4 per
// shared tag in all, 64 MiB of offer, recon and want frames, and wants of
// at most as many IDs as it holds of the tag; the initiator stops before
// the budget and syncs the rest in another round. Sync/3 keeps these
// limits and budgets. Sync/1 (one offer frame
// of at most 4,096 tags) is gone: a device past 4,096 tags could not sync.
//
// Anchors (anchor.go) adopt at most 256 new tags per offering peer and
// 16,384 in all; a carrier that holds nothing and that no peer offered for
// the TTL goes. A sender holds at most its share of the quota, so one
// device never evicts another's envelopes.
//
// Held (held.go, /medmesh/held/1): a sync/5 carrier's kept answer is
// the other way to "held" (above). An acknowledgement counts only from a
// peer admitted on a certificate with the anchor role (Node.HasRole), only
// for our ops this device sent that peer (published on a topic it was
// subscribed to, or served to it in sync), once; the record of what was
// sent keeps the newest 4,096 per anchor for 64 anchors.
//
// Site links (sites.go; an anchor's Config.Links): no conversation gossip
// crosses them; a change here kicks a sync with the site peers soon (kicks
// coalesce: one more round at most while one runs); every frame sent to a
// site peer (offers and wants too) is written in 8 KiB chunks, each within
// the link's budget (urgent first: a frame holding an envelope whose
// signed header marks it urgent, within its sender's allowance), envelopes are fetched from it 16 at
// a time, a frame on it has deadlines of progress (each chunk's wait for
// the budget, each read, a minute) rather than one for its whole size, and
// a session with it skips the tags another session with it is moving.
// What arrives from a site peer is published on this site's gossip and a
// sync kicked.
//
// Federated peers (federated.go; devices of another trust admitted under
// a federation record, Config.Federated): no gossip, no carriage either
// way, no anchor's sessions; sync only of the conversation tags
// Config.Shares says they are current members of, their inbox, and ours
// one way (offered empty: we fetch welcomes for us, they learn nothing of
// it); a hand phase from one ends the session. Their envelopes are taken
// only in conversations they are members of (or that this device holds,
// fetched by sync: the DAG authorises them there).
//
// Invariants: a forged or malformed envelope never reaches storage; every
// stream has a deadline and a size limit; every session has a work budget;
// peers get stable error codes, not our error strings; every goroutine
// stops on Close.
package mesh
