package chat

import (
	"bytes"
	"fmt"
	"slices"
	"time"

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
	// Put stores the payload an op decrypted to. No other payload is
	// stored under id (at most the same one, decrypted again), so Put
	// need not look first.
	Put(id crdt.OpID, payload []byte) error
	// Replace overwrites a stored payload — a deleted message's tombstone
	// — so that the old plaintext is purged, not only shadowed.
	Replace(id crdt.OpID, payload []byte) error
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

type supersededRecord struct {
	Epoch []byte `cbor:"1,keyasint"`
	At    int64  `cbor:"2,keyasint"` // Unix seconds
}

// keysVersion is the version of the key record's encoding.
const keysVersion = 2

type keysRecord struct {
	Version    uint8              `cbor:"1,keyasint"`
	Conv       []byte             `cbor:"2,keyasint"`
	Creator    []byte             `cbor:"3,keyasint"`
	Tag        []byte             `cbor:"4,keyasint"`
	Control    []e2e.ControlKeys  `cbor:"5,keyasint"`
	Send       []sendRecord       `cbor:"7,keyasint"`
	Recv       []byte             `cbor:"8,keyasint"`
	Superseded []supersededRecord `cbor:"9,keyasint"`
	Dropped    [][]byte           `cbor:"10,keyasint"` // epochs whose keys expired: never opened again
}

// maxKeys bounds an encoded key record: the receive chains' own bound and
// room for the control keys and send chains of thousands of epochs.
const maxKeys = 24 << 20

// Keys serialises the replica's key state — chain keys, control keys, the
// conversation's identity — for the device's encrypted store. Save it after
// every Receive or send: chain keys move forward with every message.
func (r *Replica) Keys() ([]byte, error) {
	k := keysRecord{Version: keysVersion, Conv: r.conv[:], Creator: []byte(r.creator), Tag: r.tag}
	for ep, key := range r.control {
		k.Control = append(k.Control, e2e.ControlKeys{Epoch: slices.Clone(ep[:]), Key: slices.Clone(key[:])})
	}
	byEpochKey := func(a, b e2e.ControlKeys) int {
		if c := bytes.Compare(a.Epoch, b.Epoch); c != 0 {
			return c
		}
		return bytes.Compare(a.Key, b.Key)
	}
	slices.SortFunc(k.Control, byEpochKey)
	for ep, c := range r.send {
		k.Send = append(k.Send, sendRecord{Epoch: slices.Clone(ep[:]), CK: slices.Clone(c.CK[:]), Index: c.Index})
	}
	slices.SortFunc(k.Send, func(a, b sendRecord) int { return bytes.Compare(a.Epoch, b.Epoch) })
	for ep, at := range r.superseded {
		k.Superseded = append(k.Superseded, supersededRecord{Epoch: slices.Clone(ep[:]), At: at.Unix()})
	}
	slices.SortFunc(k.Superseded, func(a, b supersededRecord) int { return bytes.Compare(a.Epoch, b.Epoch) })
	for ep := range r.dropped {
		k.Dropped = append(k.Dropped, slices.Clone(ep[:]))
	}
	slices.SortFunc(k.Dropped, bytes.Compare)
	var err error
	if k.Recv, err = r.recv.Marshal(); err != nil {
		return nil, err
	}
	return detcbor.Marshal(k)
}

func secretOf(b []byte) (e2e.Secret, bool) {
	var s e2e.Secret
	if len(b) != len(s) {
		return s, false
	}
	copy(s[:], b)
	return s, true
}

// decodeKeys parses a key record into r.
func (r *Replica) decodeKeys(b []byte) error {
	var k keysRecord
	if err := detcbor.Unmarshal(b, &k, maxKeys); err != nil {
		return err
	}
	if k.Version != keysVersion || len(k.Conv) != len(r.conv) || len(k.Tag) != 16 || len(k.Creator) == 0 {
		return fmt.Errorf("key record version %d or shape", k.Version)
	}
	copy(r.conv[:], k.Conv)
	r.creator, r.tag = peer.ID(k.Creator), k.Tag
	for _, c := range k.Control {
		ep, err := e2e.EpochIDFromBytes(c.Epoch)
		key, ok := secretOf(c.Key)
		if err != nil || !ok {
			return fmt.Errorf("control key")
		}
		r.control[ep] = key
	}
	for _, s := range k.Send {
		ep, err := e2e.EpochIDFromBytes(s.Epoch)
		ck, ok := secretOf(s.CK)
		if err != nil || !ok {
			return fmt.Errorf("send chain")
		}
		r.send[ep] = &e2e.SendChain{Epoch: ep, CK: ck, Index: s.Index}
	}
	for _, s := range k.Superseded {
		ep, err := e2e.EpochIDFromBytes(s.Epoch)
		if err != nil {
			return fmt.Errorf("superseded epoch")
		}
		r.superseded[ep] = time.Unix(s.At, 0)
	}
	for _, d := range k.Dropped {
		ep, err := e2e.EpochIDFromBytes(d)
		if err != nil {
			return fmt.Errorf("dropped epoch")
		}
		r.dropped[ep] = true
	}
	recv, err := e2e.UnmarshalRecvChains(k.Recv)
	if err != nil {
		return err
	}
	r.recv = recv
	return nil
}

// Restore rebuilds a replica after a restart from its persisted ops (the
// crdt.Store given WithStore), key state (from Keys) and plaintexts. A
// send chain never goes back: if the key record is older than the ops (a
// crash between the two writes), the chain skips past every index an op of
// ours in the DAG holds.
func Restore(dev *Device, dir Directory, keys []byte, opts ...Option) (*Replica, error) {
	r := newReplica(dev, dir, opts...)
	if r.openErr != nil {
		return nil, fmt.Errorf("restore conversation ops: %w", r.openErr)
	}
	if err := r.decodeKeys(keys); err != nil {
		return nil, fmt.Errorf("restore conversation keys: %w", err)
	}
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
		if e, err := e2e.Decode(op.Body); err == nil && e.Kind == e2e.KindContent && peer.ID(op.Author) == dev.ID {
			if ep, err := e2e.EpochIDFromBytes(e.Epoch); err == nil && r.send[ep] != nil {
				r.send[ep].SkipTo(e.Index + 1)
			}
		}
		r.apply(op) // rejections were reported when the op first arrived
	}
	r.rebuild, r.dirty = true, true
	r.refresh()
	r.fresh = nil // acknowledged before the restart, or will be on the next
	r.applied = nil
	return r, nil
}
