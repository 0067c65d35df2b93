package conversations

import (
	"context"
	"fmt"
	"slices"

	ds "github.com/ipfs/go-datastore"
)

// journal is the datastore a conversation's replica writes through (ops,
// plaintexts). Between begin and the next save or end — while this device
// makes ops — it holds writes back, so that save stores them in one batch
// with the conversation's key record and syncs the store once. Between
// hold and save — while a batch of others' ops is applied — it holds
// writes back too, so that save writes the batch at once, without a sync
// unless begin followed (ops of others can be fetched again). At other
// times writes go straight to the store. Reads see held-back writes; a
// failed save keeps them for the next. Query sees the store only (replicas
// query when they open, before any transaction). Guarded by its conversation's mutex, as
// the replica is.
type journal struct {
	ds.Datastore
	open    bool
	ours    bool // since begin: writes held are of this device's ops
	mine    bool // a write of ours is held: the next save syncs
	pending map[ds.Key]heldWrite
}

type heldWrite struct {
	value   []byte
	deleted bool
	replace bool // a put after a delete: the store gets both, in order, and purges the old value
}

func newJournal(d ds.Datastore) *journal {
	return &journal{Datastore: d, pending: map[ds.Key]heldWrite{}}
}

// begin holds writes back until save or end; they are this device's
// own, and save syncs them.
func (j *journal) begin() { j.open, j.ours = true, true }

// hold holds writes back until save or end: ops of others, which save
// writes in one batch (synced only if begin follows and writes ours).
func (j *journal) hold() { j.open = true }

// held reports whether writes are held back for the next save.
func (j *journal) held() bool { return len(j.pending) > 0 }

// end stops holding writes back; those held stay for the next save.
func (j *journal) end() { j.open, j.ours = false, false }

func (j *journal) Put(ctx context.Context, k ds.Key, v []byte) error {
	return j.put(ctx, k, v, false)
}

// putOwned is Put of a value nobody else holds (OpStore's fresh
// encoding): held back without a copy.
func (j *journal) putOwned(ctx context.Context, k ds.Key, v []byte) error {
	return j.put(ctx, k, v, true)
}

func (j *journal) put(ctx context.Context, k ds.Key, v []byte, owned bool) error {
	if j.open {
		prev, held := j.pending[k]
		if !owned {
			v = slices.Clone(v)
		}
		j.pending[k] = heldWrite{value: v, replace: held && (prev.deleted || prev.replace)}
		j.mine = j.mine || j.ours
		return nil
	}
	delete(j.pending, k)
	return j.Datastore.Put(ctx, k, v)
}

func (j *journal) Delete(ctx context.Context, k ds.Key) error {
	if j.open {
		j.pending[k] = heldWrite{deleted: true}
		j.mine = j.mine || j.ours
		return nil
	}
	delete(j.pending, k)
	return j.Datastore.Delete(ctx, k)
}

func (j *journal) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	if w, ok := j.pending[k]; ok {
		if w.deleted {
			return nil, ds.ErrNotFound
		}
		return slices.Clone(w.value), nil
	}
	return j.Datastore.Get(ctx, k)
}

func (j *journal) Has(ctx context.Context, k ds.Key) (bool, error) {
	if w, ok := j.pending[k]; ok {
		return !w.deleted, nil
	}
	return j.Datastore.Has(ctx, k)
}

func (j *journal) GetSize(ctx context.Context, k ds.Key) (int, error) {
	if w, ok := j.pending[k]; ok {
		if w.deleted {
			return -1, ds.ErrNotFound
		}
		return len(w.value), nil
	}
	return j.Datastore.GetSize(ctx, k)
}

// save ends the transaction and writes the key record of the conversation
// under prefix. With nothing held back that is a plain put. Otherwise the
// held writes and the key record go in one batch — one atomic write on the
// device's pebble store — and, if a write of ours is among them, save
// returns once the store has synced it.
func (j *journal) save(ctx context.Context, prefix ds.Key, keys []byte) error {
	j.open, j.ours = false, false
	k := prefix.ChildString("keys")
	if len(j.pending) == 0 {
		return j.Datastore.Put(ctx, k, keys)
	}
	if b, ok := j.Datastore.(ds.Batching); ok {
		j.pending[k] = heldWrite{value: keys}
		if err := j.commitBatch(ctx, b); err != nil {
			return err
		}
	} else {
		// No batches: the key record first, so that a store applying
		// writes in order, crashing part-way, leaves the chains ahead of
		// the ops (an index skipped, never one reused).
		if err := j.Datastore.Put(ctx, k, keys); err != nil {
			return err
		}
		for key, w := range j.pending {
			if err := j.apply(ctx, j.Datastore, key, w); err != nil {
				return err
			}
		}
	}
	if j.mine {
		if err := j.Datastore.Sync(ctx, prefix); err != nil {
			return fmt.Errorf("sync store: %w", err)
		}
	}
	clear(j.pending)
	j.mine = false
	return nil
}

// sizedBatching is a store that allocates a batch at its size once
// (store.Store).
type sizedBatching interface {
	BatchSized(ctx context.Context, n, vbytes int) (ds.Batch, error)
}

func (j *journal) commitBatch(ctx context.Context, b ds.Batching) error {
	var bt ds.Batch
	var err error
	if sb, ok := b.(sizedBatching); ok {
		size := 0
		for k, w := range j.pending {
			size += len(k.String()) + len(w.value)
		}
		bt, err = sb.BatchSized(ctx, len(j.pending), size)
	} else {
		bt, err = b.Batch(ctx)
	}
	if err != nil {
		return err
	}
	for key, w := range j.pending {
		if err := j.apply(ctx, bt, key, w); err != nil {
			return err
		}
	}
	return bt.Commit(ctx)
}

func (j *journal) apply(ctx context.Context, w ds.Write, k ds.Key, h heldWrite) error {
	if h.deleted || h.replace {
		if err := w.Delete(ctx, k); err != nil || h.deleted {
			return err
		}
	}
	return w.Put(ctx, k, h.value)
}
