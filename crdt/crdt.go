package crdt

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// OpID is the content hash of an operation's envelope.
type OpID [32]byte

// String is the hex form.
func (id OpID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero ID.
func (id OpID) IsZero() bool { return id == OpID{} }

// MarshalText implements encoding.TextMarshaler.
func (id OpID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *OpID) UnmarshalText(b []byte) error {
	if hex.DecodedLen(len(b)) != len(id) {
		return fmt.Errorf("%w: op ID of %d hex digits", ErrInvalid, len(b))
	}
	_, err := hex.Decode(id[:], b)
	return err
}

// Compare orders IDs bytewise.
func (id OpID) Compare(o OpID) int { return bytes.Compare(id[:], o[:]) }

// OpIDFromBytes converts a 32-byte slice.
func OpIDFromBytes(b []byte) (OpID, error) {
	var id OpID
	if len(b) != len(id) {
		return id, fmt.Errorf("%w: op ID of %d bytes", ErrInvalid, len(b))
	}
	copy(id[:], b)
	return id, nil
}

// Errors.
var (
	ErrInvalid   = errors.New("invalid op")
	ErrDuplicate = errors.New("duplicate op")
	ErrNotFound  = errors.New("op not found")
	// ErrPendingFull: an op waiting for dependencies is larger than the
	// buffer's byte budgets, so it is not buffered.
	ErrPendingFull = errors.New("op too large to buffer")
	// ErrRefused: DAG.Admit refused an op; it is neither applied nor kept.
	ErrRefused = errors.New("op refused")
)

// Timestamp is a hybrid logical clock reading: wall milliseconds and a
// logical counter for events within one millisecond.
type Timestamp struct {
	Wall    int64  `cbor:"1,keyasint"` // Unix milliseconds
	Logical uint32 `cbor:"2,keyasint"`
}

// Compare orders timestamps.
func (t Timestamp) Compare(o Timestamp) int {
	switch {
	case t.Wall < o.Wall:
		return -1
	case t.Wall > o.Wall:
		return 1
	case t.Logical < o.Logical:
		return -1
	case t.Logical > o.Logical:
		return 1
	}
	return 0
}

// Time is the wall part as a time.Time.
func (t Timestamp) Time() time.Time { return time.UnixMilli(t.Wall) }

// DefaultMaxSkew is the bound on how far ahead of local time (and of an op's
// causal context) a timestamp may be before it is distrusted.
const DefaultMaxSkew = 2 * time.Minute

// Clock is a hybrid logical clock (Kulkarni et al., 2014) with a bound: it
// adopts remote readings only up to MaxSkew ahead of physical time.
type Clock struct {
	Physical func() time.Time
	MaxSkew  time.Duration
	last     Timestamp
}

// NewClock returns a clock over physical time.
func NewClock(physical func() time.Time) *Clock {
	if physical == nil {
		physical = time.Now
	}
	return &Clock{Physical: physical, MaxSkew: DefaultMaxSkew}
}

// Now returns a timestamp greater than every one issued or adopted before.
func (c *Clock) Now() Timestamp {
	pt := c.Physical().UnixMilli()
	if pt > c.last.Wall {
		c.last = Timestamp{Wall: pt}
	} else {
		c.last.Logical++
	}
	return c.last
}

// Observe adopts a remote timestamp if it is no more than MaxSkew ahead of
// physical time. It reports whether t was within the bound.
func (c *Clock) Observe(t Timestamp) bool {
	if t.Wall > c.Physical().Add(c.MaxSkew).UnixMilli() {
		return false
	}
	if t.Compare(c.last) > 0 {
		c.last = t
	}
	return true
}

// Op is one operation: an immutable node of the DAG. Body is opaque here.
type Op struct {
	ID     OpID
	Deps   []OpID
	Author string // device (peer ID)
	Time   Timestamp
	Body   []byte
}

// MaxDeps bounds the dependencies of one op.
const MaxDeps = 64

func (op *Op) check() error {
	if op.ID.IsZero() {
		return fmt.Errorf("%w: zero ID", ErrInvalid)
	}
	if len(op.Deps) > MaxDeps {
		return fmt.Errorf("%w: %d deps, at most %d", ErrInvalid, len(op.Deps), MaxDeps)
	}
	seen := make(map[OpID]bool, len(op.Deps))
	for _, d := range op.Deps {
		if d == op.ID {
			return fmt.Errorf("%w: op depends on itself", ErrInvalid)
		}
		if seen[d] {
			return fmt.Errorf("%w: dependency named twice", ErrInvalid)
		}
		seen[d] = true
	}
	return nil
}
