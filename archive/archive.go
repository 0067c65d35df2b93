// Package archive is the filing member: a device whose certificate has the
// role "archive" (run by the trust, like an anchor) is added to clinical
// conversations like any member — so every member sees, in the member
// list and the directory, that the conversation is being filed — and files
// each message it can read into its own encrypted store (the device's
// store, under /archive/filed), from which only an operator holding its
// passphrase exports FHIR (`medmesh export fhir` on its directory).
//
// Filing rules: a message is filed (version 1) once this device holds its
// text; an edit files a new version with the current text; a delete or a
// withdrawal after filing files a new version marked entered-in-error,
// keeping what was filed (a record is corrected, never erased); a change
// of the conversation's patient files a new version of every filed
// message with the corrected patient. A message deleted before this
// device read it was never filed and is not filed. A photo whose image
// cannot be read (no chunks, or chunks not its sender's) is filed without
// it, marked PhotoUnavailable, and filing goes on with the next message;
// once the image is readable a new version files it.
//
// Bounds: a photo's bytes are stored once per message, content-addressed
// by their SHA-256 under /archive/photo, and every version refers to them
// by hash, so a new version costs a record, never a photo. At most
// MaxVersions versions of a message are kept: filing one more deletes the
// oldest intermediate version (version 1, what was first filed, is always
// kept), counts it in the new version's Dropped and logs the conversation
// and message IDs.
//
// Invariants: records hold IDs, times, text, the photo and the patient,
// and live only in the store (sealed at rest); nothing is logged about
// them but conversation and message IDs. One goroutine (Filer.run) owns
// the filing; Close stops it and waits. Filing depends on what the
// conversations layer shows, never on event order: every event, and a
// sweep every Options.Sweep, re-compares each conversation with what was
// filed, so a dropped event delays filing but loses nothing that is
// still readable.
package archive

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/patient"
)

// Role is the certificate role of a filing member.
const Role = "archive"

// DefaultSweep is how often every conversation is compared with what was
// filed, besides on each event.
const DefaultSweep = 30 * time.Second

// maxRecord bounds a stored record (a full photo fits).
const maxRecord = 32 << 20

// MaxVersions bounds the versions kept of one message (see the package
// comment for what happens beyond it).
const MaxVersions = 32

// Status of a filed version.
const (
	StatusCompleted      = "completed"
	StatusEnteredInError = "entered-in-error"
)

// Source is what the filer reads: the conversations layer.
type Source interface {
	Conversations() []conversations.Summary
	Messages(id chat.ConversationID) ([]conversations.Message, error)
	Photo(id chat.ConversationID, msg crdt.OpID, full bool) ([]byte, error)
	Events() (<-chan conversations.Event, func())
}

// Record is one filed version of a message.
type Record struct {
	Conversation chat.ConversationID `cbor:"1,keyasint"`
	Message      crdt.OpID           `cbor:"2,keyasint"`
	Version      int                 `cbor:"3,keyasint"`
	Status       string              `cbor:"4,keyasint"`
	FiledUs      int64               `cbor:"5,keyasint"` // when this version was filed (Unix µs)
	Sender       string              `cbor:"6,keyasint"` // peer ID
	Recipients   []string            `cbor:"7,keyasint"`
	SentUs       int64               `cbor:"8,keyasint"` // the sender's time (Unix µs)
	Urgent       bool                `cbor:"9,keyasint"`
	ReplyTo      crdt.OpID           `cbor:"10,keyasint"`
	Text         string              `cbor:"11,keyasint"`
	// Photo is the full JPEG, or the thumbnail if PhotoThumb. Stored
	// records leave it empty and name it by PhotoHash; Filed fills it
	// for the latest version of each message only.
	Photo      []byte           `cbor:"12,keyasint,omitempty"`
	PhotoThumb bool             `cbor:"13,keyasint"`
	Edited     bool             `cbor:"14,keyasint"`
	Patient    *patient.Patient `cbor:"15,keyasint"`
	// PhotoHash is the SHA-256 of the photo's bytes in the photo store.
	PhotoHash []byte `cbor:"16,keyasint,omitempty"`
	// PhotoUnavailable: a photo message whose image could not be read
	// when this version was filed; it is filed without it.
	PhotoUnavailable bool `cbor:"17,keyasint,omitempty"`
	// Dropped counts the intermediate versions of this message deleted
	// to keep MaxVersions.
	Dropped int `cbor:"18,keyasint,omitempty"`
}

// Options configure a Filer.
type Options struct {
	Sweep  time.Duration // default DefaultSweep
	Now    func() time.Time
	Logger *slog.Logger
}

// Filer files the conversations of one archive device.
type Filer struct {
	src  Source
	st   ds.Datastore
	o    Options
	stop context.CancelFunc
	wg   sync.WaitGroup
	mu   sync.Mutex // serialises filing; guards filed
	// filed: per conversation, the latest filed version of each message
	// without its photo, read from the store on first use: a sweep
	// compares in memory and reads the store only to file.
	filed map[chat.ConversationID]map[crdt.OpID]*Record
	once  sync.Once
}

// Start files what src holds now and then as it changes, until Close.
func Start(src Source, st ds.Datastore, o Options) *Filer {
	if o.Sweep <= 0 {
		o.Sweep = DefaultSweep
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Filer{src: src, st: st, o: o, stop: cancel, filed: map[chat.ConversationID]map[crdt.OpID]*Record{}}
	events, unsub := src.Events()
	f.wg.Add(1)
	go f.run(ctx, events, unsub)
	return f
}

// Close stops filing and waits; safe to call twice.
func (f *Filer) Close() {
	f.once.Do(func() {
		f.stop()
		f.wg.Wait()
	})
}

func (f *Filer) run(ctx context.Context, events <-chan conversations.Event, unsub func()) {
	defer f.wg.Done()
	defer unsub()
	t := time.NewTicker(f.o.Sweep)
	defer t.Stop()
	f.FileAll()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if err := f.File(ev.Conversation); err != nil {
				f.o.Logger.Warn("archive: file conversation", "conversation", ev.Conversation.String(), "err", err)
			}
		case <-t.C:
			f.FileAll()
		}
	}
}

// FileAll files every conversation.
func (f *Filer) FileAll() {
	for _, s := range f.src.Conversations() {
		if err := f.File(s.ID); err != nil {
			f.o.Logger.Warn("archive: file conversation", "conversation", s.ID.String(), "err", err)
		}
	}
}

// File compares conversation id with what was filed and files what
// changed.
func (f *Filer) File(id chat.ConversationID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var pat *patient.Patient
	for _, s := range f.src.Conversations() {
		if s.ID == id {
			pat = s.Patient
		}
	}
	msgs, err := f.src.Messages(id)
	if err != nil {
		return err
	}
	known, err := f.index(id)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		last := known[m.ID]
		gone := m.Deleted || m.Withdrawn != ""
		switch {
		case last == nil && gone:
			continue // never read here: nothing to file
		case last == nil:
			r, err := f.record(id, &m.Message, pat)
			if err != nil {
				return err
			}
			if err := f.put(r); err != nil {
				return err
			}
		case last.Status == StatusEnteredInError:
			continue
		case gone:
			r, err := f.latest(id, m.ID) // with its photo
			if err != nil {
				return err
			}
			r.Version++
			r.Status = StatusEnteredInError
			r.FiledUs = f.o.Now().UnixMicro()
			if err := f.put(r); err != nil {
				return err
			}
		case last.PhotoUnavailable && m.Photo != nil:
			img, full, err := f.photo(id, &m.Message)
			if err != nil {
				continue // still unreadable: filed without it
			}
			r, err := f.latest(id, m.ID)
			if err != nil {
				return err
			}
			r.Version++
			r.Photo, r.PhotoThumb, r.PhotoUnavailable = img, !full, false
			r.Text, r.Edited, r.Patient = m.Text, m.Edited, pat
			r.FiledUs = f.o.Now().UnixMicro()
			if err := f.put(r); err != nil {
				return err
			}
		case m.Text != last.Text || !samePatient(pat, last.Patient):
			r, err := f.latest(id, m.ID)
			if err != nil {
				return err
			}
			r.Version++
			r.Text, r.Edited, r.Patient = m.Text, m.Edited, pat
			r.FiledUs = f.o.Now().UnixMicro()
			if err := f.put(r); err != nil {
				return err
			}
		}
	}
	return nil
}

func samePatient(a, b *patient.Patient) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func (f *Filer) record(id chat.ConversationID, m *chat.Message, pat *patient.Patient) (*Record, error) {
	r := &Record{Conversation: id, Message: m.ID, Version: 1, Status: StatusCompleted, FiledUs: f.o.Now().UnixMicro(),
		Sender: m.Sender.String(), SentUs: m.Time.UnixMicro(), Urgent: m.Urgent, ReplyTo: m.ReplyTo, Text: m.Text, Edited: m.Edited, Patient: pat}
	for p := range m.Receipts {
		r.Recipients = append(r.Recipients, p.String())
	}
	slices.Sort(r.Recipients)
	if m.Photo != nil {
		img, full, err := f.photo(id, m)
		if err != nil {
			// One unreadable photo never stops filing: file the
			// message without it (a later version files it once
			// readable).
			f.o.Logger.Warn("archive: photo unavailable, filed without it", "conversation", id.String(), "message", m.ID.String())
			r.PhotoUnavailable = true
		} else {
			r.Photo, r.PhotoThumb = img, !full
		}
	}
	return r, nil
}

// photo reads m's full image if all of it arrived, else its thumbnail.
func (f *Filer) photo(id chat.ConversationID, m *chat.Message) ([]byte, bool, error) {
	full := m.Photo.Ready()
	img, err := f.src.Photo(id, m.ID, full)
	if err == nil && len(img) == 0 {
		err = fmt.Errorf("photo %s: empty", m.ID)
	}
	return img, full, err
}

func prefix(id chat.ConversationID) ds.Key {
	return ds.NewKey("/archive/filed").ChildString(id.String())
}

func key(r *Record) ds.Key {
	return prefix(r.Conversation).ChildString(r.Message.String()).ChildString(fmt.Sprintf("%08d", r.Version))
}

func photoKey(id chat.ConversationID, msg crdt.OpID, hash []byte) ds.Key {
	return ds.NewKey("/archive/photo").ChildString(id.String()).ChildString(msg.String()).ChildString(hex.EncodeToString(hash))
}

// put stores r and notes it as its message's latest version (f.mu held):
// its photo bytes go to the photo store once (by hash), the record names
// them; beyond MaxVersions the oldest intermediate version is dropped.
func (f *Filer) put(r *Record) error {
	if r.Photo != nil {
		sum := sha256.Sum256(r.Photo)
		pk := photoKey(r.Conversation, r.Message, sum[:])
		has, err := f.st.Has(context.Background(), pk)
		if err != nil {
			return fmt.Errorf("file photo %s: %w", r.Message, err)
		}
		if !has {
			if err := f.st.Put(context.Background(), pk, r.Photo); err != nil {
				return fmt.Errorf("file photo %s: %w", r.Message, err)
			}
		}
		r.PhotoHash = sum[:]
		r.Photo = nil
	}
	if r.Version > 1 {
		if err := f.bound(r); err != nil {
			return err
		}
	}
	b, err := detcbor.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode record %s: %w", r.Message, err)
	}
	if err := f.st.Put(context.Background(), key(r), b); err != nil {
		return fmt.Errorf("file message %s: %w", r.Message, err)
	}
	if m := f.filed[r.Conversation]; m != nil {
		m[r.Message] = bare(r)
	}
	return nil
}

// bound deletes the oldest intermediate versions of r's message so that
// at most MaxVersions remain with r, counting them in r.Dropped (f.mu
// held).
func (f *Filer) bound(r *Record) error {
	under := prefix(r.Conversation).ChildString(r.Message.String())
	res, err := f.st.Query(context.Background(), query.Query{Prefix: under.String(), KeysOnly: true})
	if err != nil {
		return fmt.Errorf("read filed versions: %w", err)
	}
	ents, err := res.Rest()
	if err != nil {
		return fmt.Errorf("read filed versions: %w", err)
	}
	keys := make([]string, 0, len(ents))
	for _, e := range ents {
		keys = append(keys, e.Key)
	}
	slices.Sort(keys) // zero-padded versions: version 1 first
	for len(keys)+1 > MaxVersions && len(keys) > 1 {
		if err := f.st.Delete(context.Background(), ds.NewKey(keys[1])); err != nil {
			return fmt.Errorf("drop filed version: %w", err)
		}
		keys = slices.Delete(keys, 1, 2)
		r.Dropped++
		f.o.Logger.Warn("archive: version bound reached, oldest intermediate version dropped",
			"conversation", r.Conversation.String(), "message", r.Message.String(), "max", MaxVersions)
	}
	return nil
}

// bare is r without its photo.
func bare(r *Record) *Record {
	c := *r
	c.Photo = nil
	return &c
}

// index is the latest filed version of each message of conversation id
// (f.mu held).
func (f *Filer) index(id chat.ConversationID) (map[crdt.OpID]*Record, error) {
	if m, ok := f.filed[id]; ok {
		return m, nil
	}
	all, err := load(f.st, prefix(id))
	if err != nil {
		return nil, err
	}
	m := map[crdt.OpID]*Record{}
	for i := range all {
		m[all[i].Message] = bare(&all[i]) // versions ascend within a message
	}
	f.filed[id] = m
	return m, nil
}

// latest is the latest filed version of msg without photo bytes (it
// names them by PhotoHash; a record filed before the photo store may
// still hold them inline, and put moves them).
func (f *Filer) latest(id chat.ConversationID, msg crdt.OpID) (*Record, error) {
	if m := f.filed[id]; m != nil {
		if r := m[msg]; r != nil && r.PhotoHash != nil { // else it may be a record with its photo inline
			c := *r
			return &c, nil
		}
	}
	all, err := load(f.st, prefix(id).ChildString(msg.String()))
	if err != nil {
		return nil, err
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("filed record of %s: missing", msg)
	}
	return &all[len(all)-1], nil
}

// Filed lists every filed version of conversation id's messages: by the
// sender's time, message ID, then version. Only the latest version of
// each message carries its photo's bytes (what an export needs); the
// others name them by PhotoHash.
func Filed(st ds.Datastore, id chat.ConversationID) ([]Record, error) {
	all, err := load(st, prefix(id))
	if err != nil {
		return nil, err
	}
	for i := range all {
		last := i == len(all)-1 || all[i+1].Message != all[i].Message
		if !last {
			all[i].Photo = nil
			continue
		}
		if all[i].Photo == nil && all[i].PhotoHash != nil {
			b, err := st.Get(context.Background(), photoKey(id, all[i].Message, all[i].PhotoHash))
			if err != nil {
				return nil, fmt.Errorf("filed photo of %s: %w", all[i].Message, err)
			}
			all[i].Photo = b
		}
	}
	return all, nil
}

func load(st ds.Datastore, under ds.Key) ([]Record, error) {
	res, err := st.Query(context.Background(), query.Query{Prefix: under.String()})
	if err != nil {
		return nil, fmt.Errorf("read filed records: %w", err)
	}
	defer res.Close()
	var out []Record
	for e := range res.Next() {
		if e.Error != nil {
			return nil, fmt.Errorf("read filed records: %w", e.Error)
		}
		var r Record
		if err := detcbor.Unmarshal(e.Value, &r, maxRecord); err != nil {
			return nil, fmt.Errorf("filed record %s: %w", e.Key, err)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Record) int {
		if a.SentUs != b.SentUs {
			return cmp.Compare(a.SentUs, b.SentUs)
		}
		if a.Message != b.Message {
			return slices.Compare(a.Message[:], b.Message[:])
		}
		return a.Version - b.Version
	})
	return out, nil
}

// Filed lists what this filer filed for conversation id (Filed).
func (f *Filer) Filed(id chat.ConversationID) ([]Record, error) { return Filed(f.st, id) }
