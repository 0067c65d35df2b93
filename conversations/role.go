package conversations

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/patient"
)

// CreateForRole is CreateAbout for a conversation addressed to an on-call
// role: members are the role's holders as the caller resolved them (and
// whoever else it names), and the role link goes in an encrypted role op
// made with the conversation — saved and published together, or neither.
func (s *Service) CreateForRole(title string, members []peer.ID, p *patient.Patient, link chat.RoleLink) (chat.ConversationID, error) {
	return s.create(title, members, p, &link)
}
