package archive

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/patient"
)

// fakeSource is one conversation whose patient, messages and readable
// photos a test sets.
type fakeSource struct {
	mu     sync.Mutex
	id     chat.ConversationID
	pat    *patient.Patient
	msgs   []conversations.Message
	photos map[crdt.OpID][]byte // readable thumbnails
}

func (s *fakeSource) Conversations() []conversations.Summary {
	s.mu.Lock()
	defer s.mu.Unlock()
	return []conversations.Summary{{ID: s.id, Patient: s.pat}}
}

func (s *fakeSource) Messages(chat.ConversationID) ([]conversations.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]conversations.Message(nil), s.msgs...), nil
}

func (s *fakeSource) Photo(_ chat.ConversationID, msg crdt.OpID, full bool) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.photos[msg]; ok && !full {
		return b, nil
	}
	return nil, chat.ErrNoSuchMessage
}

func (s *fakeSource) Events() (<-chan conversations.Event, func()) { return nil, func() {} }

// newTestFiler is a Filer without its goroutine: the test calls File.
func newTestFiler(src Source, st ds.Datastore) *Filer {
	t := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	return &Filer{src: src, st: st, filed: map[chat.ConversationID]map[crdt.OpID]*Record{},
		o: Options{Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { t = t.Add(time.Second); return t }}}
}

func op(b byte) crdt.OpID {
	var id crdt.OpID
	id[0], id[31] = b, b
	return id
}

func msg(id crdt.OpID, sec int, text string, photo bool) conversations.Message {
	m := conversations.Message{Message: chat.Message{ID: id, Text: text, Time: time.Unix(int64(sec), 0)}}
	if photo {
		m.Photo = &chat.Photo{Size: 1}
	}
	return m
}

// stored is the number and size of the store's entries under prefix.
func stored(t *testing.T, st ds.Datastore, prefix string) (n, size int) {
	t.Helper()
	res, err := st.Query(context.Background(), query.Query{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		n, size = n+1, size+len(e.Value)
	}
	return n, size
}

// TestPhotoStoredOnceVersionsBounded: patient corrections file new
// versions of a photo message that refer to its bytes, stored once; past
// MaxVersions the oldest intermediate versions are dropped (version 1
// kept) and counted, so what is stored stays bounded however many
// corrections arrive.
func TestPhotoStoredOnceVersionsBounded(t *testing.T) {
	jane, _ := patient.New("943 476 5919", "Jane Doe", "1950-03-14", time.Now())
	john, _ := patient.New("401 023 2137", "John Roe", "", time.Now())
	img := bytes.Repeat([]byte{0xff, 0xd8, 7}, 100_000)
	ph, tx := op(1), op(2)
	src := &fakeSource{id: chat.ConversationID{7}, pat: &jane, photos: map[crdt.OpID][]byte{ph: img},
		msgs: []conversations.Message{msg(ph, 1, "wound, day 3", true), msg(tx, 2, "dressing changed", false)}}
	st := dssync.MutexWrap(ds.NewMapDatastore())
	f := newTestFiler(src, st)
	const flips = 3 * MaxVersions
	for i := range flips + 1 {
		if i > 0 {
			src.mu.Lock()
			src.pat = []*patient.Patient{&jane, &john}[i%2]
			src.mu.Unlock()
		}
		if err := f.File(src.id); err != nil {
			t.Fatal(err)
		}
	}
	if n, size := stored(t, st, "/archive/photo"); n != 1 || size != len(img) {
		t.Fatalf("photo store holds %d entries, %d bytes: want the %d-byte photo once", n, size, len(img))
	}
	if n, size := stored(t, st, "/archive/filed"); n != 2*MaxVersions || size > 2*MaxVersions*1024 {
		t.Fatalf("%d corrections stored %d versions, %d bytes: want %d small records", flips, n, size, 2*MaxVersions)
	}
	recs, err := Filed(st, src.id)
	if err != nil {
		t.Fatal(err)
	}
	var v []Record
	for _, r := range recs {
		if r.Message == ph {
			v = append(v, r)
		}
	}
	last := v[len(v)-1]
	if len(v) != MaxVersions || v[0].Version != 1 || last.Version != flips+1 || last.Dropped != flips+1-MaxVersions {
		t.Fatalf("versions kept %d (first %d, last %d, dropped %d)", len(v), v[0].Version, last.Version, last.Dropped)
	}
	for _, r := range v[:len(v)-1] {
		if r.Photo != nil || r.PhotoHash == nil {
			t.Fatalf("version %d: Filed loaded photo bytes it does not need (%d), or lost the hash", r.Version, len(r.Photo))
		}
	}
	if !bytes.Equal(last.Photo, img) || !samePatient(last.Patient, src.pat) {
		t.Fatalf("latest version: photo %d bytes, patient %v", len(last.Photo), last.Patient)
	}
}

// TestUnreadablePhotoFiledWithoutIt: a photo whose image cannot be read
// is filed without it (completed, PhotoUnavailable) and later messages
// are filed; once readable, a new version files the image.
func TestUnreadablePhotoFiledWithoutIt(t *testing.T) {
	bad, later := op(1), op(2)
	src := &fakeSource{id: chat.ConversationID{8}, photos: map[crdt.OpID][]byte{},
		msgs: []conversations.Message{msg(bad, 1, "", true), msg(later, 2, "ECG: peaked T waves", false)}}
	st := dssync.MutexWrap(ds.NewMapDatastore())
	f := newTestFiler(src, st)
	for range 3 {
		if err := f.File(src.id); err != nil {
			t.Fatalf("File: %v", err)
		}
	}
	recs, err := f.Filed(src.id)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Message != bad || !recs[0].PhotoUnavailable || recs[0].Status != StatusCompleted || recs[1].Message != later {
		t.Fatalf("filed %s", describe(recs))
	}
	src.mu.Lock()
	src.photos[bad] = []byte("jpeg")
	src.mu.Unlock()
	if err := f.File(src.id); err != nil {
		t.Fatal(err)
	}
	recs, _ = f.Filed(src.id)
	if len(recs) != 3 || recs[1].Message != bad || recs[1].Version != 2 || recs[1].PhotoUnavailable || string(recs[1].Photo) != "jpeg" {
		t.Fatalf("after the photo became readable: %s", describe(recs))
	}
}

func describe(recs []Record) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "[%x v%d %s unavailable=%v photo=%d] ", r.Message[:1], r.Version, r.Status, r.PhotoUnavailable, len(r.Photo))
	}
	return b.String()
}
