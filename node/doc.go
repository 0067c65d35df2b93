// Package node wires one medmesh device together: a libp2p host whose
// identity is the device key, a connection gater, the admission protocol
// /medmesh/admit/2, gossipsub with the trust topic (CRLs and directory
// entries), peer exchange and directory sync, and discovery. It owns the
// lifecycle: New starts every goroutine, Close stops them all and waits.
//
// Admission is the gate to everything else. Right after a connection is
// secured each side opens a stream to the other on /medmesh/admit/2 and
// presents its admission credential (identity.CA.SignCredential): a
// certificate of the trust's CA holding the device key (the peer ID), KEM
// key, roles and validity, and no staff details. Until
// identity.Trust.AdmitCredential accepts the other side's credential, no
// other protocol serves or reaches that peer: medmesh stream handlers and
// pubsub's own streams (through gatedHost) wait for the decision and are
// reset if it is negative, gossipsub runs without floodsub, an RPC
// inspector drops RPCs from non-admitted peers, and validators check the
// forwarding peer. A peer that has not been admitted within AdmitTimeout
// is disconnected and kept out for a while by the gater.
//
// The exchange, per direction (frames of admitFrame, varint-length
// prefixed):
//
//	credential   always first; at most maxChainFrame (≈25 KiB), the only
//	             frame read from a peer not admitted yet, one presentation
//	             of such a peer at a time (more streams are reset unread)
//	details      the staff certificate chain (name, staff ID,
//	             registration, department, site), written only once the
//	             writer has admitted the reader; it must be the
//	             certificate the credential links to
//	CRL          each newest CRL, read only from an admitted peer, at
//	             most maxCRLFrame each; to a peer refused as revoked the
//	             writer sends its CRLs instead of its details
//
// Privacy: a device shows its staff details only to a peer whose
// credential it has verified, so an outsider on the LAN (no certificate,
// another trust's, an expired or revoked one) learns no name, staff ID,
// registration or department — not a "you first" exchange, which is
// circular, but a credential that carries nothing personal. What stays
// visible and linkable to anyone on the network: the peer ID (in mDNS
// announcements and the Noise handshake), the listen addresses, and the
// credential itself — its issuer (the trust and, for a site CA, the site),
// roles, validity and KEM key, all stable for the certificate's life. A
// device is therefore trackable by peer ID on the LAN, but not
// identifiable as a person without a credential of the trust.
//
// When a newer CRL arrives (trust topic, a peer's presentation or the local
// API) every admitted peer is judged again; connections to revoked
// peers are closed at once, after the CRL has been handed to them, and the
// gater blocks them. A device that finds its own certificate revoked calls
// Config.OnRevoked (which wipes its store) and stops.
//
// The staff directory (every colleague's certificate chain and signed
// prekey) lives in the store; the node keeps a small index per colleague in
// memory (staff ID, certificate serial and expiry, prekey time, a digest of
// the stored entry), so a device in a trust of thousands holds kilobytes,
// not megabytes, and an entry it already holds is dropped without
// verifying its chain again. On /medmesh/directory/2 a device offers an
// admitted peer the digests of the entries that changed since that peer
// last took its directory (all, the first time); the peer asks for the
// ones it lacks — colleagues meeting again exchange little or nothing.
//
// Site issuing CAs become known from the chains the node meets (its own,
// admissions, directory entries); each is verified against the roots and
// persisted, and at start the node loads them before the stored CRLs, so a
// site CA's CRL keeps refusing the devices it revokes across a restart.
//
// A colleague whose certificate a CRL revokes leaves the directory's
// selectable set at once: Directory, LookupStaff and Recipient (ErrRevoked)
// no longer offer it, while its entry stays in the store and KnownStaff
// reports it revoked. OnRevocation tells the layers above when what is
// revoked changed.
//
// Peer exchange is bounded (px.go, discovery.Try): at most 64 peers taken
// from one exchange and per colleague and minute, dialled at their claimed
// ID only, at addresses discovery.Policy allows, a few dials at once taken
// fairly across colleagues. Gossipsub scores peers (score.go) with an
// application score fed by what validators reject (Penalise); a peer that
// keeps sending invalid messages is disconnected and blocked for a while.
//
// The site's on-call rota (package rota; rota.go) spreads like directory
// entries: new ops on RotaTopic and straight to admitted neighbours, and an
// exchange of op IDs on /medmesh/rota/1 after the directory sync with each
// newly admitted peer. Only admitted peers are heard (the gated handler,
// the topic's peer filter and validator), only ops of this device's site
// are taken in, and only from signers the directory offers now (not
// revoked, not expired) whose certificate could allow them; the rota is
// persisted in the store and reloaded, after the directory, at start.
//
// Devices of another trust are admitted only under a federation record
// our root CA signed (federation.go; identity/federation.go), as federated
// peers: a class apart whose peerState carries the record, for whom
// isAdmitted is false — so every protocol and topic gated on admission
// (directory, peer exchange, trust topic, every pubsub topic, rota, relay,
// the mesh's carriage) refuses them — and who never enter the directory
// or get our CRLs. What they get (federated_peers.go): this device's own
// signed prekey on /medmesh/fedprekey/1 (served to federated peers only;
// theirs is fetched and checked on admission, so a member can invite
// them), the entries of their fellow members of our staff
// (/medmesh/fedintro/1, IntroduceTo: only those the layers above name),
// and, through the mesh's hooks (KnownFederated, IsFederated), sync of
// the conversations they are members of and nothing else. The federated
// devices a node met (chain and prekey, judged again at every use) are
// told to our own staff on /medmesh/fedbook/1 (federated_book.go), so a
// colleague who never met one takes its envelopes in a conversation they
// share. Records are persisted, exchanged with every admitted colleague on
// /medmesh/federation/1 and judged like CRLs (newest per other root wins); a
// newer record judges every peer again, so a withdrawal drops the trust's
// devices. CRLs of a federated trust are accepted, persisted and spread
// like ours; a federated peer may hand us only ours and its own trust's.
// A CRL of a CA this device has not met (another trust's site CA, known
// to the colleague forwarding it) is held in a bounded, persisted pending list
// (pendingcrl.go) and installed, then spread, as soon as the CA is learnt
// — before the presenter whose chain taught it is judged; when a record
// becomes active again, the federated CAs and CRLs stored are reloaded.
//
// An anchor with site peers (sites.go, Config.SitePeers) keeps them
// connected: protected in the connection manager, probed with ping
// (served to admitted peers only), re-dialled with backoff and jitter by
// one goroutine. Listing a peer trusts it for nothing: it is admitted like
// any other. Conversation gossip does not cross a site link (the pubsub
// peer filter keeps the trust topic only); the mesh syncs across it
// instead, paced by the link's budget (PaceSite: a token bucket, urgent
// first, never in debt). Directory entries that changed the anchor's
// directory (verified) are synced across the link, at most one forward at
// a time and one per 5 s per site peer, and back to this site's peers.
// Peer exchange never crosses a site link: a site peer is named to no one,
// no peer is named to it, the peers it names are not dialled, and no
// address reached through it is forwarded. A listing anchor tells its site
// peer so (/medmesh/site/1, after admission; anchors' word only), and the
// other side then filters alike even if it does not list it back; an
// anchor newly admitted is named to no one for 10 s while that word is
// awaited. Site and bootstrap peers are dialled at their configured
// addresses or any public one (dialAllowedTo). The links' state
// (sites.mu), each link's budget (pacer.mu) and the site-link words
// (siteWords.mu) are owners of their own.
//
// State has five owners, none holding another's lock: the admission part
// (admission: peer table, block list, gater decisions, the trust's CAs and
// CRLs; admission.mu and admission.crlMu), the directory (directory: index
// and stored entries; directory.mu), the node's own prekey ring
// (Node.pkMu), the rota (rotaState.mu, which takes directory.mu inside it,
// never the reverse) and the record of rejected messages (scorer.mu, which
// gossipsub reads under its own lock, so nothing is called while it is
// held). Each type documents its invariants; Node wires them to the host
// and pubsub. Logs carry peer IDs, never names, staff IDs or keys.
package node
