package conversations_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/patient"
)

// lockedBuffer is a log sink shared by several devices.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// secrets are the forms a patient could leak in: digits, spaced, and the
// name, each also hex-encoded (topics and keys are hex).
func secrets(ps ...patient.Patient) [][]byte {
	var out [][]byte
	for _, p := range ps {
		for _, s := range []string{string(p.NHSNumber), p.NHSNumber.String(), p.Name} {
			out = append(out, []byte(s), []byte(hex.EncodeToString([]byte(s))))
		}
	}
	return out
}

func leaks(b []byte, secret [][]byte) string {
	for _, s := range secret {
		if bytes.Contains(b, s) {
			return string(s)
		}
	}
	return ""
}

func patientOn(p *testnet.Peer, id chat.ConversationID) *patient.Patient {
	sum, err := p.C.Conversation(id)
	if err != nil {
		return nil
	}
	return sum.Patient
}

// TestPatientEndToEnd: a conversation about a patient between devices on
// loopback, carried by an anchor that is no member. The patient reaches
// every member, and a correction by a member reaches the others — but not
// a member removed before it, which holds the correction's envelope and
// cannot read it. Throughout, the NHS number and the name appear in no
// envelope, no topic, no tag, no store value or key (these stores are not
// encrypted at rest, so this is what an attacker holding the bytes sees),
// and no log line at debug level.
func TestPatientEndToEnd(t *testing.T) {
	jane, err := patient.New("943 476 5919", "Jane Doe", "1950-03-14", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	john, err := patient.New("401-023-2137", "John Roe", "1962-07-01", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	secret := secrets(jane, john)
	logs := &lockedBuffer{}
	log := device.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))

	c := testnet.NewCA(t)
	x := testnet.Start(t, c, c.Enrol(t, "x"), device.WithAnchor(64<<20, time.Hour), log)
	a := testnet.Start(t, c, c.Enrol(t, "a"), testnet.Boot(x), log)
	b := testnet.Start(t, c, c.Enrol(t, "b"), testnet.Boot(x, a), log)
	r := testnet.Start(t, c, c.Enrol(t, "r"), testnet.Boot(x, a), log)
	testnet.Knows(t, a, b, r)
	all := []*testnet.Peer{x, a, b, r}

	id, err := a.C.CreateAbout("Bay 3", []peer.ID{b.ID, r.ID}, &jane)
	if err != nil {
		t.Fatal(err)
	}
	tag := chat.TagOf(id, a.ID)
	for _, p := range []*testnet.Peer{a, b, r} {
		testnet.Eventually(t, 20*time.Second, p.Ident.Name+" shows the patient", func() bool {
			got := patientOn(p, id)
			return got != nil && *got == jane
		})
	}
	if err := a.C.Remove(id, r.ID); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, "b sees r removed", func() bool { return testnet.Joined(b, id, 2) })
	fix, err := b.C.SetPatient(id, &john)
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, "a shows the correction", func() bool {
		got := patientOn(a, id)
		return got != nil && *got == john
	})
	// The removed member and the anchor both come to hold the correction.
	testnet.Eventually(t, 20*time.Second, "r holds the correction's envelope", func() bool {
		return slices.Contains(r.C.IDs(tag), fix)
	})
	if got := patientOn(r, id); got == nil || *got != jane {
		t.Fatalf("removed member shows %+v after a correction made after its removal", got)
	}
	testnet.Eventually(t, 20*time.Second, "the anchor carries the correction", func() bool {
		return storeHas(t, x, fix.String())
	})
	// The anchor is in no conversation: it cannot show a patient.
	if len(x.C.Conversations()) != 0 {
		t.Fatal("the anchor lists a conversation")
	}

	// What each device holds, sends and logs.
	if s := leaks(tag, secret) + leaks([]byte(hex.EncodeToString(tag)), secret); s != "" {
		t.Fatalf("the tag carries %q", s)
	}
	for _, p := range all {
		for _, env := range p.C.Envelopes(tag, p.C.IDs(tag)) {
			if s := leaks(env, secret); s != "" {
				t.Fatalf("an envelope on %s carries %q", p.Ident.Name, s)
			}
		}
		for _, topic := range p.N.PubSub().GetTopics() {
			if s := leaks([]byte(topic), secret); s != "" {
				t.Fatalf("topic %s on %s carries %q", topic, p.Ident.Name, s)
			}
		}
		res, err := p.Ident.Store.Query(context.Background(), query.Query{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for e := range res.Next() {
			n++
			if s := leaks(append([]byte(e.Key), e.Value...), secret); s != "" {
				t.Fatalf("%s's store holds %q in the clear under %s", p.Ident.Name, s, e.Key)
			}
		}
		if n == 0 {
			t.Fatalf("%s's store is empty: nothing was checked", p.Ident.Name)
		}
	}
	out := logs.Bytes()
	if len(out) == 0 {
		t.Fatal("no log output: nothing was checked")
	}
	if s := leaks(out, secret); s != "" {
		t.Fatalf("the logs carry %q", s)
	}
}

func storeHas(t *testing.T, p *testnet.Peer, suffix string) bool {
	t.Helper()
	res, err := p.Ident.Store.Query(context.Background(), query.Query{KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	for e := range res.Next() {
		if strings.HasSuffix(e.Key, suffix) {
			return true
		}
	}
	return false
}

// TestCreateAboutRefusesInvalid: an invalid patient makes no conversation.
func TestCreateAboutRefusesInvalid(t *testing.T) {
	c := testnet.NewCA(t)
	a := testnet.Start(t, c, c.Enrol(t, "a"))
	bad := patient.Patient{NHSNumber: "9434765918", Name: "Jane Doe"}
	if _, err := a.C.CreateAbout("Bay 3", nil, &bad); err == nil || !strings.Contains(err.Error(), "check digit") || strings.Contains(err.Error(), "943") {
		t.Fatalf("invalid NHS number: %v", err)
	}
	if len(a.C.Conversations()) != 0 {
		t.Fatal("a conversation was made")
	}
}
