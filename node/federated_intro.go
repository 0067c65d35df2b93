package node

import (
	"bufio"
	"context"
	"errors"
	"slices"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/internal/streams"
)

// A federated member of a conversation must know its other members —
// our staff it has never met — to take their envelopes and seal to them,
// and no one else: it gets no directory. IntroduceTo hands a federated
// peer the directory entries (staff chain and signed prekey) of the
// colleagues the layers above name — its fellow members — once per
// colleague and admission, on ProtoFedIntro (frames of dirEntry, at most
// maxFedBook, each at most maxFedEntry bytes). The taker reads it only
// from a peer it admits as federated, and keeps an entry only if its chain
// is admitted under the same federation record as the introducer's
// (colleagues of the introducer, within its own policy), in its fedBook.
const ProtoFedIntro = "/medmesh/fedintro/1"

// IntroduceTo hands federated peer p the entries of those of ids that are
// our own staff in the directory (not revoked), not introduced to p since
// its admission. It returns when they are sent (or could not be).
func (n *Node) IntroduceTo(p peer.ID, ids []peer.ID) {
	if !n.IsFederated(p) {
		return
	}
	var entries [][]byte
	var sent []peer.ID
	now := n.cfg.Now()
	for _, id := range ids {
		if id == p || n.fed.wasIntroduced(p, id) || slices.Contains(sent, id) {
			continue
		}
		var de dirEntry
		if id == n.ID() {
			w := n.ownEntry()
			if w == nil {
				continue
			}
			de = *w
		} else {
			s, e, err := n.dir.colleague(id)
			if err != nil || now.After(s.NotAfter) {
				continue
			}
			if _, err := n.dir.recipient(id, now); err != nil {
				continue // revoked (or unknown)
			}
			de = e
		}
		raw, err := detcbor.Marshal(de)
		if err != nil {
			continue
		}
		entries, sent = append(entries, raw), append(sent, id)
		if len(entries) == maxFedBook {
			break
		}
	}
	if len(entries) == 0 {
		return
	}
	if n.sendMessages(p, ProtoFedIntro, "fedintro", entries, maxFedBook) {
		n.fed.introduced(p, sent)
	}
}

// handleFedIntro takes the colleagues a federated peer introduces.
func (n *Node) handleFedIntro(s network.Stream) {
	from := s.Conn().RemotePeer()
	ctx, cancel := context.WithTimeout(n.ctx, dirTimeout)
	defer cancel()
	if !n.awaitAdmitted(ctx, from) && !n.IsFederated(from) {
		s.Reset()
		return
	}
	_, fed, ok := n.FederatedStaff(from)
	if !ok {
		s.Reset()
		return
	}
	defer s.Close()
	defer streams.Bound(n.ctx, s, dirTimeout)()
	r := msgio.NewVarintReaderSize(bufio.NewReader(s), maxFedEntry)
	for range maxFedBook {
		raw, err := r.ReadMsg()
		if err != nil {
			return
		}
		err = n.takeIntroduced(raw, fed.Other)
		r.ReleaseMsg(raw)
		if errors.Is(err, identity.ErrMalformed) || errors.Is(err, e2e.ErrBadPrekey) || errors.Is(err, errIntroOtherTrust) {
			n.log.Debug("fedintro entry refused", "remote", from.String(), "err", err)
			n.Penalise(from)
		}
	}
}

var errIntroOtherTrust = errors.New("introduced a device of another trust than its own")

// takeIntroduced is takeFedEntry for an entry a federated peer of trust
// other introduces: it must be of that trust.
func (n *Node) takeIntroduced(raw []byte, other identity.CAKey) error {
	return n.takeFedEntry(raw, &other)
}

// wasIntroduced and introduced track, per federated peer and admission,
// the colleagues introduced to it (forgotten when it is admitted again).
func (b *fedBook) wasIntroduced(p, id peer.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.intro[p][id]
}

func (b *fedBook) introduced(p peer.ID, ids []peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.intro == nil {
		b.intro = map[peer.ID]map[peer.ID]bool{}
	}
	if b.intro[p] == nil {
		if len(b.intro) >= maxFedBook {
			clear(b.intro)
		}
		b.intro[p] = map[peer.ID]bool{}
	}
	for _, id := range ids {
		b.intro[p][id] = true
	}
}

func (b *fedBook) forgetIntroduced(p peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.intro, p)
}
