package chat

import (
	"fmt"
	"unicode/utf8"
)

// RoleLink names the on-call role (package rota) a conversation was
// addressed to: its ID and its display name when the link was made. It
// lives only inside the encrypted conversation state (a role op, kind
// 18), never in an envelope header, topic or tag.
type RoleLink struct {
	ID   string
	Name string
}

// Bounds of a role link.
const (
	maxRoleID   = 64
	maxRoleName = 128
)

// roleBody is a role link inside a role op.
type roleBody struct {
	ID   string `cbor:"1,keyasint"`
	Name string `cbor:"2,keyasint,omitempty"`
}

func (b *roleBody) check() error {
	if b.ID == "" || len(b.ID) > maxRoleID || len(b.Name) > maxRoleName || !utf8.ValidString(b.ID) || !utf8.ValidString(b.Name) {
		return fmt.Errorf("%w: role link", ErrInvalidPayload)
	}
	return nil
}

// SetRole links the conversation to an on-call role (nil clears the
// link); admins only — the creator sets it with the conversation. It is a
// control op, like the patient link, so every member reads it.
func (r *Replica) SetRole(l *RoleLink) (Out, error) {
	op := &payload{Kind: kindRole}
	if l != nil {
		op.Role = &roleBody{ID: l.ID, Name: l.Name}
		if err := op.Role.check(); err != nil {
			return Out{}, err
		}
	}
	return r.do(op)
}
