package mesh

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-msgio"
)

// slowStream delivers its bytes at rate bytes per second (simulated time)
// and honours read deadlines.
type slowStream struct {
	network.Stream
	buf      *bytes.Reader
	rate     int
	deadline time.Time
}

func (s *slowStream) SetReadDeadline(t time.Time) error { s.deadline = t; return nil }
func (s *slowStream) Read(b []byte) (int, error) {
	time.Sleep(time.Second) // the link's rate, in the bubble's time
	if !s.deadline.IsZero() && time.Now().After(s.deadline) {
		return 0, os.ErrDeadlineExceeded
	}
	return s.buf.Read(b[:min(len(b), s.rate)])
}

// TestSiteFrameReadWithProgress: the reading side of a large frame from a
// site peer (sixteen 300 KiB envelopes at 64 KiB/s: 75 s) keeps reading
// while bytes arrive; a link that stops for longer than siteFrameTimeout
// still fails the read.
func TestSiteFrameReadWithProgress(t *testing.T) {
	envs := make([][]byte, siteBatch)
	for i := range envs {
		envs[i] = make([]byte, 300<<10)
	}
	b, err := encodeFrame(frame{Kind: fEnvs, Tag: make([]byte, tagLen), Envs: envs})
	if err != nil {
		t.Fatal(err)
	}
	wire := append(binary.AppendUvarint(nil, uint64(len(b))), b...)
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s := &Service{cfg: Config{Links: &budgetLinks{rate: 64 << 10}}, ctx: ctx, cancel: cancel}
		st := &slowStream{buf: bytes.NewReader(wire), rate: 64 << 10}
		c := &conn{svc: s, p: "site", site: true, s: st, r: msgio.NewVarintReaderSize(siteReader{st}, maxFrame), sent: &s.sent}
		start := time.Now()
		f, err := c.recv()
		if err != nil || len(f.Envs) != siteBatch {
			t.Fatalf("a %d-byte frame from a site peer, arriving steadily, failed after %v: %v", len(wire), time.Since(start), err)
		}
		if time.Since(start) <= siteFrameTimeout {
			t.Fatalf("the frame took %v: the test is no test of a frame longer than siteFrameTimeout", time.Since(start))
		}
	})
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s := &Service{cfg: Config{Links: &budgetLinks{rate: 64 << 10}}, ctx: ctx, cancel: cancel}
		// A link that stops carrying: each read takes longer than the deadline.
		st := &stalledStream{slowStream{buf: bytes.NewReader(wire), rate: 64 << 10}}
		c := &conn{svc: s, p: "site", site: true, s: st, r: msgio.NewVarintReaderSize(siteReader{st}, maxFrame), sent: &s.sent}
		if _, err := c.recv(); err == nil {
			t.Fatal("a frame read from a link that stopped carrying succeeded")
		}
	})
}

type stalledStream struct{ slowStream }

func (s *stalledStream) Read(b []byte) (int, error) {
	time.Sleep(siteFrameTimeout + time.Second)
	return s.slowStream.Read(b)
}
func (s *stalledStream) SetReadDeadline(t time.Time) error { s.deadline = t; return nil }

// TestSiteUrgentFromHeader: a frame to a site peer is urgent when every
// envelope in it is one whose signed header says urgent — carried,
// forwarded or our own alike — and routine otherwise (a routine envelope
// in it makes it routine); an oversized "urgent" envelope never counts.
func TestSiteUrgentFromHeader(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := carrierService(t, 1<<20, &now)
	tag, other := make([]byte, tagLen), make([]byte, tagLen)
	other[0] = 1
	_, raw := sprayEnv(t, tag, newPeerID(t), now, 1000)
	_, rawU := sprayEnvUrgent(t, other, newPeerID(t), now, 1000)
	_, big := sprayEnvUrgent(t, other, newPeerID(t), now, maxUrgentSize)
	if s.urgentIn([][]byte{raw}) {
		t.Fatal("a routine envelope is paced as urgent")
	}
	if !s.urgentIn([][]byte{rawU}) {
		t.Fatal("a frame of an urgent envelope is not urgent")
	}
	if s.urgentIn([][]byte{raw, rawU}) {
		t.Fatal("a frame with a routine envelope in it is paced urgent")
	}
	if s.urgentIn([][]byte{big}) {
		t.Fatal("an urgent envelope larger than maxUrgentSize is paced as urgent")
	}
}
