package conversations

import (
	"context"
	"errors"
	"fmt"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// OpStore is a crdt.Store over a go-datastore namespace (the device's
// encrypted store): the persisted op log of one conversation.
type OpStore struct {
	d      ds.Datastore
	prefix ds.Key
}

// NewOpStore keeps ops under prefix in d.
func NewOpStore(d ds.Datastore, prefix ds.Key) *OpStore { return &OpStore{d: d, prefix: prefix} }

type storedOp struct {
	Deps    [][]byte `cbor:"1,keyasint"`
	Author  []byte   `cbor:"2,keyasint"` // raw peer ID bytes: not UTF-8
	Wall    int64    `cbor:"3,keyasint"`
	Logical uint32   `cbor:"4,keyasint"`
	Body    []byte   `cbor:"5,keyasint"`
}

func (s *OpStore) key(id crdt.OpID) ds.Key { return s.prefix.ChildString(id.String()) }

func (s *OpStore) Put(op crdt.Op) error {
	so := storedOp{Author: []byte(op.Author), Wall: op.Time.Wall, Logical: op.Time.Logical, Body: op.Body}
	for _, d := range op.Deps {
		so.Deps = append(so.Deps, d[:])
	}
	b := so.appendCBOR(make([]byte, 0, so.size()))
	if j, ok := s.d.(*journal); ok {
		return j.putOwned(context.Background(), s.key(op.ID), b)
	}
	return s.d.Put(context.Background(), s.key(op.ID), b)
}

// appendCBOR appends what detcbor.Marshal makes of so (held to it by
// TestStoredOpEncoding and FuzzDecodeOp), without reflection: a map of
// keys 1–5 in order, shortest heads, a nil byte string or array as null.
func (so storedOp) appendCBOR(b []byte) []byte {
	b = append(b, detcbor.MajorMap|5, 1)
	if so.Deps == nil {
		b = append(b, detcbor.Null)
	} else {
		b = detcbor.AppendHead(b, detcbor.MajorArray, uint64(len(so.Deps)))
		for _, d := range so.Deps {
			b = detcbor.AppendBytes(b, d)
		}
	}
	b = detcbor.AppendBytes(append(b, 2), so.Author)
	b = append(b, 3)
	if so.Wall < 0 {
		b = detcbor.AppendHead(b, detcbor.MajorNeg, uint64(-1-so.Wall))
	} else {
		b = detcbor.AppendHead(b, detcbor.MajorUint, uint64(so.Wall))
	}
	b = detcbor.AppendHead(append(b, 4), detcbor.MajorUint, uint64(so.Logical))
	return detcbor.AppendBytes(append(b, 5), so.Body)
}

// size bounds the encoding of so (heads of at most 9 bytes).
func (so storedOp) size() int {
	n := 8*9 + len(so.Author) + len(so.Body)
	for _, d := range so.Deps {
		n += 9 + len(d)
	}
	return n
}

func decodeOp(id crdt.OpID, b []byte) (crdt.Op, error) {
	var so storedOp
	if err := detcbor.Unmarshal(b, &so, 2<<20); err != nil {
		return crdt.Op{}, fmt.Errorf("stored op %s: %w", id, err)
	}
	op := crdt.Op{ID: id, Author: string(so.Author), Time: crdt.Timestamp{Wall: so.Wall, Logical: so.Logical}, Body: so.Body}
	for _, d := range so.Deps {
		dep, err := crdt.OpIDFromBytes(d)
		if err != nil {
			return crdt.Op{}, err
		}
		op.Deps = append(op.Deps, dep)
	}
	return op, nil
}

func (s *OpStore) Get(id crdt.OpID) (crdt.Op, error) {
	b, err := s.d.Get(context.Background(), s.key(id))
	if errors.Is(err, ds.ErrNotFound) {
		return crdt.Op{}, crdt.ErrNotFound
	}
	if err != nil {
		return crdt.Op{}, err
	}
	return decodeOp(id, b)
}

func (s *OpStore) Has(id crdt.OpID) (bool, error) { return s.d.Has(context.Background(), s.key(id)) }

func (s *OpStore) Delete(id crdt.OpID) error { return s.d.Delete(context.Background(), s.key(id)) }

func (s *OpStore) ForEach(fn func(crdt.Op) error) error {
	res, err := s.d.Query(context.Background(), query.Query{Prefix: s.prefix.String()})
	if err != nil {
		return err
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
		var id crdt.OpID
		if err := id.UnmarshalText([]byte(ds.RawKey(r.Key).BaseNamespace())); err != nil {
			return fmt.Errorf("stored op key %s: %w", r.Key, err)
		}
		op, err := decodeOp(id, r.Value)
		if err != nil {
			return err
		}
		if err := fn(op); err != nil {
			return err
		}
	}
	return nil
}

func (s *OpStore) Len() (int, error) {
	n := 0
	err := s.ForEach(func(crdt.Op) error { n++; return nil })
	return n, err
}

// plainStore keeps decrypted content payloads (chat.Plaintexts).
type plainStore struct {
	d      ds.Datastore
	prefix ds.Key
}

// Put stores an op's payload: nothing else is stored under its ID (see
// chat.Plaintexts), so no lookup first.
func (p plainStore) Put(id crdt.OpID, b []byte) error {
	return p.d.Put(context.Background(), p.prefix.ChildString(id.String()), b)
}

// Replace stores a payload that replaces a stored one (a deleted message's
// tombstone): it deletes the old one first, so that the device's store
// purges the old plaintext from disk rather than only shadowing it.
func (p plainStore) Replace(id crdt.OpID, b []byte) error {
	ctx, k := context.Background(), p.prefix.ChildString(id.String())
	if has, err := p.d.Has(ctx, k); err == nil && has {
		if err := p.d.Delete(ctx, k); err != nil {
			return err
		}
	}
	return p.d.Put(ctx, k, b)
}

func (p plainStore) Get(id crdt.OpID) ([]byte, bool) {
	b, err := p.d.Get(context.Background(), p.prefix.ChildString(id.String()))
	return b, err == nil
}

func (p plainStore) Delete(id crdt.OpID) error {
	return p.d.Delete(context.Background(), p.prefix.ChildString(id.String()))
}
