package streams

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

// openPair opens a stream from one mocknet peer to another whose handler
// never reads nor writes (mocknet streams ignore deadlines).
func openPair(t *testing.T) network.Stream {
	t.Helper()
	mn, err := mocknet.FullMeshConnected(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mn.Close() })
	hs := mn.Hosts()
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	hs[1].SetStreamHandler("/test/1", func(s network.Stream) { <-hold; s.Reset() })
	s, err := hs[0].NewStream(context.Background(), hs[1].ID(), "/test/1")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// readReturns reports whether a blocked read on s returns within d.
func readReturns(s network.Stream, within time.Duration) bool {
	done := make(chan struct{})
	go func() { io.ReadAll(s); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(within):
		s.Reset() // let the reader go
		<-done
		return false
	}
}

func TestBoundResetsWhenTimeIsUp(t *testing.T) {
	s := openPair(t)
	release := Bound(context.Background(), s, 50*time.Millisecond)
	defer release()
	if !readReturns(s, 5*time.Second) {
		t.Fatal("a blocked read outlived the bound")
	}
}

func TestBoundResetsWhenOwnerCloses(t *testing.T) {
	s := openPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	release := Bound(ctx, s, time.Hour)
	defer release()
	cancel()
	if !readReturns(s, 5*time.Second) {
		t.Fatal("a blocked read outlived its owner")
	}
}

func TestReleasedStreamIsLeftAlone(t *testing.T) {
	s := openPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	Bound(ctx, s, time.Hour)()
	cancel()
	if readReturns(s, 200*time.Millisecond) {
		t.Fatal("a released stream was reset")
	}
}
