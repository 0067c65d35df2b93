package chat

import (
	"fmt"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// Plaintexts keeps the payloads of content ops this device has decrypted.
// Message keys are used once, so the plaintext must be kept to show a
// message again after a restart; it lives in the device's encrypted store,
// and is deleted with the message (delete, retention).
type Plaintexts interface {
	Put(id crdt.OpID, payload []byte) error
	Get(id crdt.OpID) ([]byte, bool)
	Delete(id crdt.OpID) error
}

// WithPlaintexts persists decrypted content payloads in p.
func WithPlaintexts(p Plaintexts) Option { return func(r *Replica) { r.plain = p } }

type sendRecord struct {
	Epoch []byte `cbor:"1,keyasint"`
	CK    []byte `cbor:"2,keyasint"`
	Index uint32 `cbor:"3,keyasint"`
}

type keysRecord struct {
	Conv    []byte            `cbor:"1,keyasint"`
	Creator []byte            `cbor:"2,keyasint"`
	Tag     []byte            `cbor:"3,keyasint"`
	Control []e2e.ControlKeys `cbor:"4,keyasint"`
	Send    []sendRecord      `cbor:"5,keyasint"`
	Recv    []byte            `cbor:"6,keyasint"`
}

// Keys serialises the replica's key state — chain keys, control keys, the
// conversation's identity — for the device's encrypted store. Save it after
// every Receive or send: chain keys move forward with every message.
func (r *Replica) Keys() ([]byte, error) {
	k := keysRecord{Conv: r.conv[:], Creator: []byte(r.creator), Tag: r.tag}
	for ep, key := range r.control {
		k.Control = append(k.Control, e2e.ControlKeys{Epoch: slices.Clone(ep[:]), Key: slices.Clone(key[:])})
	}
	slices.SortFunc(k.Control, func(a, b e2e.ControlKeys) int { return compareBytes(a.Epoch, b.Epoch) })
	for ep, c := range r.send {
		k.Send = append(k.Send, sendRecord{Epoch: slices.Clone(ep[:]), CK: slices.Clone(c.CK[:]), Index: c.Index})
	}
	slices.SortFunc(k.Send, func(a, b sendRecord) int { return compareBytes(a.Epoch, b.Epoch) })
	var err error
	if k.Recv, err = r.recv.Marshal(); err != nil {
		return nil, err
	}
	return detcbor.Marshal(k)
}

func compareBytes(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return len(a) - len(b)
}

// Restore rebuilds a replica after a restart from its persisted ops (the
// crdt.Store given WithStore), key state (from Keys) and plaintexts.
func Restore(dev *Device, dir Directory, keys []byte, opts ...Option) (*Replica, error) {
	var k keysRecord
	if err := detcbor.Unmarshal(keys, &k, 64<<20); err != nil {
		return nil, fmt.Errorf("restore conversation keys: %w", err)
	}
	r := newReplica(dev, dir, opts...)
	if r.openErr != nil {
		return nil, fmt.Errorf("restore conversation ops: %w", r.openErr)
	}
	copy(r.conv[:], k.Conv)
	r.creator, r.tag = peer.ID(k.Creator), k.Tag
	for _, c := range k.Control {
		ep, err := e2e.EpochIDFromBytes(c.Epoch)
		if err != nil || len(c.Key) != 32 {
			return nil, fmt.Errorf("restore conversation keys: control key")
		}
		var key e2e.Secret
		copy(key[:], c.Key)
		r.control[ep] = key
	}
	for _, s := range k.Send {
		ep, err := e2e.EpochIDFromBytes(s.Epoch)
		if err != nil || len(s.CK) != 32 {
			return nil, fmt.Errorf("restore conversation keys: send chain")
		}
		c := &e2e.SendChain{Epoch: ep, Index: s.Index}
		copy(c.CK[:], s.CK)
		r.send[ep] = c
	}
	recv, err := e2e.UnmarshalRecvChains(k.Recv)
	if err != nil {
		return nil, err
	}
	r.recv = recv
	r.restoring = true
	defer func() { r.restoring = false }()
	for _, id := range r.dag.Order() {
		op, err := r.dag.Get(id)
		if err != nil {
			return nil, err
		}
		if r.dag.Gone(id) {
			r.ops[id] = &opInfo{gone: true, sender: peer.ID(op.Author), before: r.union(op.Deps)}
			r.ops[id].view = r.ops[id].before
			continue
		}
		r.apply(op) // rejections were reported when the op first arrived
	}
	r.fresh = nil // acknowledged before the restart, or will be on the next
	return r, nil
}
