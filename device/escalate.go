package device

import "github.com/medmesh/medmesh/conversations"

// WithEscalator names who urgent messages nobody acknowledged go to next
// (the on-call rota implements it). Without it the sender is asked to
// choose (conversations.EventChoose).
func WithEscalator(e conversations.Escalator) Option {
	return func(c *config) error { c.escalator = e; return nil }
}
