package conversations

import (
	"errors"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/mesh"
)

// Federated colleagues (scope "invited"): a device of another trust that
// one of our members adds to a conversation. The chat core treats it as
// any member — it reads and writes, its ops are authorised by the DAG —
// and as a member who is not an admin it may add or remove no one. This
// service keeps it so: it never promotes a device of another trust
// (Config.Foreign), so such a device can never invite anyone, ours or its
// own colleagues. Shares tells the mesh which conversations a federated
// peer may sync: those it is a current member of, nothing else.

// ErrForeignAdmin: a device of another trust cannot be made an admin.
var ErrForeignAdmin = errors.New("a device of another trust cannot be an admin")

// Shares reports whether p is a current member of the conversation whose
// tag is tag (held here). The mesh asks it for federated peers only; it
// takes the conversation's lock, so it must not be called holding one.
func (s *Service) Shares(p peer.ID, tag []byte) bool {
	c := s.byTag(tag)
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.r.MemberSet(); len(m) > 0 {
		return m[p]
	}
	// Joined on a welcome whose conversation has not arrived yet: its
	// sender is the one to sync it from.
	return c.joined && c.joinedBy == p
}

// foreign reports whether p is a device of another trust.
func (s *Service) foreign(p peer.ID) bool { return s.cfg.Foreign != nil && s.cfg.Foreign(p) }

// CoMembers lists the other members of the conversation whose tag is tag
// when p is one of its current members (nil otherwise): whom a federated
// member must be introduced to.
func (s *Service) CoMembers(p peer.ID, tag []byte) []peer.ID {
	c := s.byTag(tag)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.r.MemberSet()
	if !m[p] {
		return nil
	}
	out := make([]peer.ID, 0, len(m))
	for id := range m {
		if id != p {
			out = append(out, id)
		}
	}
	return out
}

// creatorWelcome reports whether one of envs is a welcome from sender (a
// device of another trust) whose share for this device opens and names
// sender as the creator of the conversation whose tag it carries
// (e2e.OpenWelcome checks the tag against the sealed conversation ID and
// creator). A welcome from such a device is joined only then: it cannot
// steer us into a conversation of others (whose tag it knows) and so make
// Shares hand it that conversation's ciphertext while it never opens.
func (s *Service) creatorWelcome(envs []mesh.Checked, sender peer.ID) bool {
	dev := s.cfg.Device
	for _, ce := range envs {
		if ce.Env.Kind != e2e.KindWelcome {
			continue
		}
		if from, err := ce.Env.SenderID(); err != nil || from != sender {
			continue
		}
		w, err := e2e.DecodeWelcome(ce.Env.Body)
		if err != nil {
			continue
		}
		keys, secret, err := e2e.OpenWelcome(ce.Env, w, dev.ID, dev.Prekeys, dev.CertKEM)
		if err != nil {
			continue
		}
		clear(secret[:])
		if peer.ID(keys.Creator) == sender {
			return true
		}
	}
	return false
}

// Prune removes, in every conversation this device is an admin of, the
// members drop names (devices of another trust whose record no longer
// admits them: withdrawn or narrowed), all at once with a new epoch, as
// Revoke does for revoked members.
func (s *Service) Prune(drop func(peer.ID) bool) {
	for _, c := range s.all() {
		c.mu.Lock()
		id := c.r.ID()
		var gone []peer.ID
		if st := c.r.State(); !id.IsZero() && slices.Contains(st.Admins, s.cfg.Device.ID) {
			for _, m := range st.Members {
				if m != s.cfg.Device.ID && drop(m) {
					gone = append(gone, m)
				}
			}
		}
		c.mu.Unlock()
		if len(gone) == 0 {
			continue
		}
		if _, err := s.do(id, func(r *chat.Replica) (chat.Out, error) { return r.Remove(gone...) }); err != nil {
			s.log.Warn("remove members of a trust no longer federated", "conversation", id.String(), "members", len(gone), "err", err)
		}
	}
}
