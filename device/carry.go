package device

// WithCarry turns carriage by non-members on or off (on by default): the
// device carries, within the mesh's bounds (1 MiB, 7 days, a quarter of
// that per origin), sealed envelopes of conversations it is not in,
// handed to it by colleagues, and hands them to members or anchors it
// meets (see package mesh, carry.go). Off, it is handed nothing; its own
// messages still go out to colleagues who carry.
func WithCarry(on bool) Option { return func(c *config) error { c.noCarry = !on; return nil } }
