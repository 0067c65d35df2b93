package mesh

import (
	"encoding/hex"
	"fmt"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// Copy counts survive a restart. The bag's envelopes are stored with the
// copies left to hand on (carriedRecord), rewritten whenever they change;
// a device's own ops with copies to spray are stored under
// /spray/<hex tag>/<op ID> (tokenRecord). Both go to the mesh's Store (the
// device's encrypted store) when copies are taken off — before the
// envelopes go — so a device restarted at any point hands out at most the
// copies it started with.

// tokenRecord is a stored token: an op of ours with copies left to spray.
type tokenRecord struct {
	Copies uint32 `cbor:"1,keyasint"`
	Urgent bool   `cbor:"2,keyasint,omitempty"`
	Exp    int64  `cbor:"3,keyasint"` // Unix seconds
}

func tokenKey(tag []byte, id crdt.OpID) ds.Key {
	return ds.NewKey("/spray").ChildString(hex.EncodeToString(tag)).ChildString(id.String())
}

// saveTokenLocked stores token k (or forgets it when it has no copies to
// hand). Callers hold mu.
func (s *Service) saveTokenLocked(k string, t *token) {
	if s.cfg.Store == nil {
		return
	}
	if t.copies <= 1 {
		s.cfg.Store.Delete(s.ctx, tokenKey(t.tag, t.id))
		return
	}
	rec, _ := detcbor.Marshal(tokenRecord{Copies: t.copies, Urgent: t.urgent, Exp: t.exp.Unix()})
	if err := s.cfg.Store.Put(s.ctx, tokenKey(t.tag, t.id), rec); err != nil {
		s.log.Error("carry: store copies", "err", err)
	}
}

// dropTokenLocked forgets token k and its stored record. Callers hold mu.
func (s *Service) dropTokenLocked(k string) {
	t := s.tokens[k]
	if t == nil {
		return
	}
	delete(s.tokens, k)
	if s.cfg.Store != nil {
		s.cfg.Store.Delete(s.ctx, tokenKey(t.tag, t.id))
	}
}

// saveBagLocked rewrites a bag entry's stored record with its copies left.
// Callers hold mu.
func (s *Service) saveBagLocked(it *bagItem) {
	key := carrierKey(it.c.tag).ChildString(it.id.String())
	b, err := s.cfg.Store.Get(s.ctx, key)
	if err != nil {
		return // dropped meanwhile
	}
	var r carriedRecord
	if detcbor.Unmarshal(b, &r, 2<<20) != nil {
		return
	}
	r.Copies = it.copies
	rec, _ := detcbor.Marshal(r)
	if err := s.cfg.Store.Put(s.ctx, key, rec); err != nil {
		s.log.Error("carry: store copies", "err", err)
	}
}

// restoreTokens reads the stored tokens back, dropping the expired ones
// (and all of them when CarryCopies ≤ 1: nothing sprays then).
func (s *Service) restoreTokens() error {
	res, err := s.cfg.Store.Query(s.ctx, query.Query{Prefix: "/spray"})
	if err != nil {
		return err
	}
	defer res.Close()
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for r := range res.Next() {
		if r.Error != nil {
			return r.Error
		}
		tag, id, rec, err := decodeToken(r.Key, r.Value)
		exp := time.Unix(rec.Exp, 0)
		if err != nil || s.cfg.CarryCopies <= 1 || rec.Copies <= 1 || !exp.After(now) {
			s.cfg.Store.Delete(s.ctx, ds.NewKey(r.Key))
			continue
		}
		if s.tokens == nil {
			s.tokens = map[string]*token{}
		}
		s.seq++
		s.tokens[handKey(tag, id)] = &token{tag: tag, id: id, seq: s.seq, copies: min(rec.Copies, uint32(s.cfg.CarryCopies)), urgent: rec.Urgent, exp: exp}
	}
	for len(s.tokens) > maxTokens {
		s.dropTokenLocked(s.oldestTokenLocked())
	}
	return nil
}

// decodeToken parses one stored token: /spray/<hex tag>/<op ID>.
func decodeToken(key string, value []byte) (tag []byte, id crdt.OpID, rec tokenRecord, err error) {
	l := ds.NewKey(key).List()
	if len(l) != 3 || l[0] != "spray" {
		return nil, id, rec, fmt.Errorf("%w: key of %d parts", ErrStored, len(l))
	}
	if tag, err = hex.DecodeString(l[1]); err != nil || len(tag) != tagLen {
		return nil, id, rec, fmt.Errorf("%w: tag", ErrStored)
	}
	if id.UnmarshalText([]byte(l[2])) != nil {
		return nil, id, rec, fmt.Errorf("%w: op ID", ErrStored)
	}
	if err := detcbor.Unmarshal(value, &rec, 64); err != nil {
		return nil, id, rec, fmt.Errorf("%w: %v", ErrStored, err)
	}
	return tag, id, rec, nil
}

// oldestTokenLocked is the key of the oldest token. Callers hold mu.
func (s *Service) oldestTokenLocked() string {
	var oldest string
	var at uint64
	for k, t := range s.tokens {
		if at == 0 || t.seq < at {
			oldest, at = k, t.seq
		}
	}
	return oldest
}
