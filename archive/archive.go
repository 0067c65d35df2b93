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
// device read it was never filed and is not filed.
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
	Photo        []byte              `cbor:"12,keyasint,omitempty"` // the full JPEG, or the thumbnail if PhotoThumb
	PhotoThumb   bool                `cbor:"13,keyasint"`
	Edited       bool                `cbor:"14,keyasint"`
	Patient      *patient.Patient    `cbor:"15,keyasint"`
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
		full := m.Photo.Ready()
		img, err := f.src.Photo(id, m.ID, full)
		if err != nil {
			return nil, fmt.Errorf("photo %s: %w", m.ID, err)
		}
		r.Photo, r.PhotoThumb = img, !full
	}
	return r, nil
}

func prefix(id chat.ConversationID) ds.Key {
	return ds.NewKey("/archive/filed").ChildString(id.String())
}

func key(r *Record) ds.Key {
	return prefix(r.Conversation).ChildString(r.Message.String()).ChildString(fmt.Sprintf("%08d", r.Version))
}

// put stores r and notes it as its message's latest version (f.mu held).
func (f *Filer) put(r *Record) error {
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

// latest reads the latest filed version of msg, photo included.
func (f *Filer) latest(id chat.ConversationID, msg crdt.OpID) (*Record, error) {
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
// sender's time, message ID, then version.
func Filed(st ds.Datastore, id chat.ConversationID) ([]Record, error) {
	return load(st, prefix(id))
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
