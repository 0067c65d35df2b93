// Package attack is medmesh's adversarial harness: attacks a host with no
// certificate of the trust — an outsider on the hospital LAN — can make on
// a node, each with the bound the node must keep. The node and device tests
// run them against real nodes on loopback; `medmesh attack` points them at
// a running node so a tester can try a build.
//
// An outsider reaches only the admission protocol: every other protocol
// resets its streams and pubsub refuses it. So the attacks are on
// /medmesh/admit/2 and on connections: frames larger than a chain, many
// streams, a slowloris presentation, garbage, fresh identities that never
// present, other protocols before admission, and reading what the node
// shows an unadmitted peer (it must name no one). Attacks by admitted
// devices (welcome floods, sync offers, tag floods, address floods,
// invalid envelopes and trust-topic messages) live beside the code they
// attack, in the mesh, conversations and node tests.
//
// Every attack dials only the target it is given; callers give loopback
// addresses (or addresses in a network namespace the test made).
package attack

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Protocols attacked (node.ProtoAdmit and the mesh's; not imported, so the
// harness stays independent of the code it attacks).
const (
	protoAdmit     = "/medmesh/admit/2"
	protoSync      = "/medmesh/sync/8"
	protoDirectory = "/medmesh/directory/2"
)

// Bounds the node must keep (see node/doc.go: a credential frame is at
// most ≈25 KiB; a peer not admitted gets one presentation read at a time
// and is dropped after the admission timeout, 5 s by default).
const (
	// RefuseWithin: an oversized frame, garbage, a second presentation or
	// another protocol before admission is refused within this time.
	RefuseWithin = 3 * time.Second
	// DropWithin: a peer that never completes a presentation is dropped
	// within this time (admission timeout plus slack).
	DropWithin = 10 * time.Second
)

// Result is what one attack observed.
type Result struct {
	Name string
	// OK is whether the node kept its bound; Detail says what was seen.
	OK     bool
	Detail string
	Took   time.Duration
}

// Attack is one attack on target, from fresh identities.
type Attack struct {
	Name  string
	About string
	Run   func(ctx context.Context, target peer.AddrInfo) Result
}

// Outsider lists the attacks of a host with no certificate.
func Outsider() []Attack {
	return []Attack{
		{"oversized-frame", "a credential frame that claims 8 MiB", oversized},
		{"stream-flood", "64 admission streams, each a frame never finished", streamFlood},
		{"slowloris", "a presentation trickled a byte at a time", slowloris},
		{"garbage", "random bytes as a presentation", garbage},
		{"other-protocols", "sync and directory streams before admission", otherProtocols},
		{"identity-churn", "16 fresh identities that connect and never present", churn},
		{"harvest", "read what the node shows a peer with no certificate", harvest},
	}
}

// Run runs attacks against target, in order.
func Run(ctx context.Context, target peer.AddrInfo, attacks []Attack) []Result {
	out := make([]Result, 0, len(attacks))
	for _, a := range attacks {
		t0 := time.Now()
		r := a.Run(ctx, target)
		r.Name, r.Took = a.Name, time.Since(t0)
		out = append(out, r)
	}
	return out
}

// newHost is a fresh identity on loopback that answers the target's own
// admission stream by reading it into shown (if not nil).
func newHost(shown chan<- []byte) (host.Host, error) {
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	h, err := libp2p.New(libp2p.Identity(priv), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		return nil, err
	}
	h.SetStreamHandler(protoAdmit, func(s network.Stream) {
		b, _ := io.ReadAll(io.LimitReader(s, 16<<20))
		s.Close()
		if shown != nil {
			select {
			case shown <- b:
			default:
			}
		}
	})
	return h, nil
}

// open connects a fresh host to target and opens a stream on proto.
func open(ctx context.Context, target peer.AddrInfo, proto protocol.ID) (host.Host, network.Stream, error) {
	h, err := newHost(nil)
	if err != nil {
		return nil, nil, err
	}
	if err := h.Connect(ctx, target); err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	s, err := h.NewStream(ctx, target.ID, proto)
	if err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("open %s: %w", proto, err)
	}
	return h, s, nil
}

// refusedWithin waits until s is reset or closed by the target, or d.
func refusedWithin(s network.Stream, d time.Duration) (bool, time.Duration) {
	t0 := time.Now()
	s.SetReadDeadline(t0.Add(d))
	_, err := io.Copy(io.Discard, s)
	took := time.Since(t0)
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return false, took
	}
	return took < d, took
}

func uvarint(n uint64) []byte {
	var b [binary.MaxVarintLen64]byte
	return b[:binary.PutUvarint(b[:], n)]
}

func oversized(ctx context.Context, target peer.AddrInfo) Result {
	h, s, err := open(ctx, target, protoAdmit)
	if err != nil {
		return Result{Detail: err.Error()}
	}
	defer h.Close()
	s.Write(uvarint(8 << 20))
	s.Write(make([]byte, 64<<10))
	ok, took := refusedWithin(s, RefuseWithin)
	return Result{OK: ok, Detail: fmt.Sprintf("stream ended after %v", took.Round(time.Millisecond))}
}

func streamFlood(ctx context.Context, target peer.AddrInfo) Result {
	h, err := newHost(nil)
	if err != nil {
		return Result{Detail: err.Error()}
	}
	defer h.Close()
	if err := h.Connect(ctx, target); err != nil {
		return Result{Detail: err.Error()}
	}
	const n = 64
	refused := make(chan bool, n)
	for range n {
		s, err := h.NewStream(ctx, target.ID, protoAdmit)
		if err != nil {
			refused <- true
			continue
		}
		s.Write([]byte{0x40}) // a 64-byte frame, never sent
		go func() {
			ok, _ := refusedWithin(s, RefuseWithin)
			refused <- ok
		}()
	}
	count := 0
	for range n {
		if <-refused {
			count++
		}
	}
	// One presentation may be read (until the admission timeout).
	return Result{OK: count >= n-1, Detail: fmt.Sprintf("%d of %d streams refused within %v", count, n, RefuseWithin)}
}

func slowloris(ctx context.Context, target peer.AddrInfo) Result {
	h, s, err := open(ctx, target, protoAdmit)
	if err != nil {
		return Result{Detail: err.Error()}
	}
	defer h.Close()
	t0 := time.Now()
	s.Write(uvarint(20 << 10))
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for time.Since(t0) < DropWithin {
		select {
		case <-ctx.Done():
			return Result{Detail: ctx.Err().Error()}
		case <-tick.C:
		}
		if _, err := s.Write([]byte{0xa0}); err != nil || h.Network().Connectedness(target.ID) != network.Connected {
			return Result{OK: true, Detail: fmt.Sprintf("dropped after %v", time.Since(t0).Round(time.Millisecond))}
		}
	}
	return Result{Detail: fmt.Sprintf("still connected after %v", DropWithin)}
}

func garbage(ctx context.Context, target peer.AddrInfo) Result {
	h, s, err := open(ctx, target, protoAdmit)
	if err != nil {
		return Result{Detail: err.Error()}
	}
	defer h.Close()
	junk := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n\xff\xff\xff\xff")
	s.Write(append(uvarint(uint64(len(junk))), junk...))
	ok, took := refusedWithin(s, RefuseWithin)
	return Result{OK: ok, Detail: fmt.Sprintf("stream ended after %v", took.Round(time.Millisecond))}
}

func otherProtocols(ctx context.Context, target peer.AddrInfo) Result {
	for _, p := range []protocol.ID{protoSync, protoDirectory} {
		h, s, err := open(ctx, target, p)
		if err != nil {
			continue // refused at negotiation: fine
		}
		s.Write(uvarint(16))
		s.Write(make([]byte, 16))
		ok, took := refusedWithin(s, DropWithin)
		h.Close()
		if !ok {
			return Result{Detail: fmt.Sprintf("%s stream still open after %v", p, took)}
		}
	}
	return Result{OK: true, Detail: "sync and directory refused before admission"}
}

func churn(ctx context.Context, target peer.AddrInfo) Result {
	const n = 16
	hosts := make([]host.Host, 0, n)
	defer func() {
		for _, h := range hosts {
			h.Close()
		}
	}()
	for range n {
		h, err := newHost(nil)
		if err != nil {
			return Result{Detail: err.Error()}
		}
		hosts = append(hosts, h)
		h.Connect(ctx, target)
	}
	deadline := time.Now().Add(DropWithin)
	for time.Now().Before(deadline) {
		connected := 0
		for _, h := range hosts {
			if h.Network().Connectedness(target.ID) == network.Connected {
				connected++
			}
		}
		if connected == 0 {
			return Result{OK: true, Detail: fmt.Sprintf("all %d dropped", n)}
		}
		select {
		case <-ctx.Done():
			return Result{Detail: ctx.Err().Error()}
		case <-time.After(100 * time.Millisecond):
		}
	}
	return Result{Detail: fmt.Sprintf("identities still connected after %v", DropWithin)}
}

// harvest connects with no certificate and reads what the node presents:
// a credential frame and nothing more — no details frame.
func harvest(ctx context.Context, target peer.AddrInfo) Result {
	shown := make(chan []byte, 1)
	h, err := newHost(shown)
	if err != nil {
		return Result{Detail: err.Error()}
	}
	defer h.Close()
	if err := h.Connect(ctx, target); err != nil {
		return Result{Detail: err.Error()}
	}
	var b []byte
	select {
	case b = <-shown:
	case <-time.After(DropWithin):
		return Result{Detail: "the node presented nothing"}
	case <-ctx.Done():
		return Result{Detail: ctx.Err().Error()}
	}
	kinds, err := frameKinds(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		return Result{Detail: "unreadable presentation: " + err.Error()}
	}
	for _, k := range kinds {
		if k != 1 {
			return Result{Detail: fmt.Sprintf("frame kinds %v: more than a credential", kinds)}
		}
	}
	return Result{OK: len(kinds) == 1, Detail: fmt.Sprintf("%d bytes, frame kinds %v", len(b), kinds)}
}

// frameKinds reads the kinds of the admission frames in r.
func frameKinds(r *bufio.Reader) ([]uint8, error) {
	var kinds []uint8
	for {
		n, err := binary.ReadUvarint(r)
		if errors.Is(err, io.EOF) {
			return kinds, nil
		}
		if err != nil || n > 8<<20 {
			return kinds, fmt.Errorf("frame length: %v", err)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(r, data); err != nil {
			return kinds, err
		}
		var f struct {
			Kind uint8 `cbor:"1,keyasint"`
		}
		if err := cbor.Unmarshal(data, &f); err != nil {
			return kinds, err
		}
		kinds = append(kinds, f.Kind)
	}
}
