package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/identity"
)

// listener is a bare libp2p host on loopback that records everything a
// node writes to it on /medmesh/admit/2, and presents what send writes.
type listener struct {
	h    host.Host
	mu   sync.Mutex
	got  bytes.Buffer
	done atomic.Int32 // admission streams read to the end
}

func newListener(t *testing.T, d device, send func(network.Stream)) *listener {
	t.Helper()
	priv, _ := crypto.UnmarshalEd25519PrivateKey(d.key.Identity)
	h, err := libp2p.New(libp2p.Identity(priv), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	l := &listener{h: h}
	h.SetStreamHandler(ProtoAdmit, func(s network.Stream) {
		b, _ := io.ReadAll(s)
		l.mu.Lock()
		l.got.Write(b)
		l.mu.Unlock()
		s.Close()
		l.done.Add(1)
	})
	h.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		go func() {
			s, err := h.NewStream(context.Background(), c.RemotePeer(), ProtoAdmit)
			if err == nil {
				send(s)
			}
		}()
	}})
	return l
}

func (l *listener) frames(t *testing.T) []admitFrame {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	r := bufio.NewReader(bytes.NewReader(l.got.Bytes()))
	var out []admitFrame
	for {
		f, err := readAdmitFrame(r, maxCRLFrame)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("node wrote a broken frame: %v", err)
			}
			return out
		}
		out = append(out, f)
	}
}

// TestOutsiderLearnsNoStaffDetails: a device with no certificate, one of
// another trust and a revoked colleague each connect; what the node writes
// to them names no one — a credential, and for the revoked one the CRL —
// while an admitted colleague learns who the node is.
func TestOutsiderLearnsNoStaffDetails(t *testing.T) {
	c := newCA(t, "General Hospital")
	other := newCA(t, "Elsewhere")
	now := time.Now()
	secret := c.enrol(t, "drsecretname", now) // staff ID drsecretname-id
	revoked := c.enrol(t, "revoked", now)
	n := startNode(t, c, secret)
	if _, err := n.SubmitCRL(context.Background(), c.crl(t, 1, revoked.chain[0].SerialNumber)); err != nil {
		t.Fatal(err)
	}
	nocert, _ := identity.GenerateDeviceKey()
	cases := []struct {
		name    string
		d       device
		present bool
	}{
		{"no certificate", device{key: nocert}, false},
		{"another trust", other.enrol(t, "foreign", now), true},
		{"revoked", revoked, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newListener(t, tc.d, func(s network.Stream) {
				if tc.present {
					presentChain(tc.d.bundle)(s)
				}
			})
			if err := l.h.Connect(context.Background(), peer.AddrInfo{ID: n.ID(), Addrs: n.host.Addrs()}); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "peer refused and dropped", func() bool {
				return n.isBlocked(l.h.ID()) && n.host.Network().Connectedness(l.h.ID()) != network.Connected
			})
			if tc.name == "revoked" {
				eventually(t, 10*time.Second, "node's notice read to the end", func() bool { return l.done.Load() > 0 })
			}
			l.mu.Lock()
			raw := bytes.Clone(l.got.Bytes())
			l.mu.Unlock()
			if bytes.Contains(raw, []byte("drsecretname")) {
				t.Fatal("an unadmitted peer learnt the clinician's name or staff ID")
			}
			fs := l.frames(t)
			if len(fs) > 0 {
				chain, err := decodeChain(fs[0].Chain)
				if fs[0].Kind != admitCredential || err != nil || !identity.IsCredential(chain[0]) {
					t.Fatalf("first frame (kind %d) is not a credential: %v", fs[0].Kind, err)
				}
			}
			crls := 0
			for _, f := range fs {
				switch f.Kind {
				case admitDetails:
					t.Fatal("an unadmitted peer was shown the staff details")
				case admitCRL:
					crls++
				}
			}
			if tc.name == "revoked" && crls == 0 {
				t.Fatal("the revoked device was not handed the CRL")
			}
		})
	}
	// An admitted colleague learns the name.
	colleague := startNode(t, c, c.enrol(t, "colleague", now), bootstrap(n))
	eventually(t, 10*time.Second, "the colleague sees the node's name", func() bool {
		for _, p := range colleague.Status().Peers {
			if p.PeerID == n.ID().String() && p.Admitted && p.Name == "drsecretname" {
				return true
			}
		}
		return false
	})
}

// TestAdmissionReadsLittleBeforeAdmission: an unadmitted peer gets one
// presentation read at a time and no frame larger than a chain — it
// cannot make the node buffer megabytes per stream over many streams.
func TestAdmissionReadsLittleBeforeAdmission(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	n := startNode(t, c, c.enrol(t, "one", now), func(cfg *Config) { cfg.AdmitTimeout = time.Minute })

	t.Run("oversized frame", func(t *testing.T) {
		k, _ := identity.GenerateDeviceKey()
		l := newListener(t, device{key: k}, func(s network.Stream) {
			var hdr [binary.MaxVarintLen64]byte
			s.Write(hdr[:binary.PutUvarint(hdr[:], 8<<20)]) // claims 8 MiB, sends none
		})
		if err := l.h.Connect(context.Background(), peer.AddrInfo{ID: n.ID(), Addrs: n.host.Addrs()}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "peer refused on the frame's length alone", func() bool { return n.isBlocked(l.h.ID()) })
	})

	t.Run("many streams", func(t *testing.T) {
		k, _ := identity.GenerateDeviceKey()
		l := newListener(t, device{key: k}, func(network.Stream) {})
		if err := l.h.Connect(context.Background(), peer.AddrInfo{ID: n.ID(), Addrs: n.host.Addrs()}); err != nil {
			t.Fatal(err)
		}
		const streams = 16
		var reset atomic.Int32
		var wg sync.WaitGroup
		for range streams {
			s, err := l.h.NewStream(context.Background(), n.ID(), ProtoAdmit)
			if err != nil {
				reset.Add(1)
				continue
			}
			s.Write([]byte{0x10}) // a frame of 16 bytes, never sent
			wg.Add(1)
			go func() {
				defer wg.Done()
				var b [1]byte
				if _, err := s.Read(b[:]); err != nil && !errors.Is(err, io.EOF) {
					reset.Add(1)
				}
			}()
		}
		// Well before the admission timeout (a minute here), all but one
		// stream are refused.
		eventually(t, 5*time.Second, "all but one presentation refused unread", func() bool { return reset.Load() >= streams-1 })
		l.h.Close()
		wg.Wait()
	})
}

// TestDetailsMustMatchCredential: a device holding two valid certificates
// (renewed: same key, new serial) presents the credential of one and the
// staff details of the other. The details are not the certificate the
// credential vouches for: the peer is refused, not admitted.
func TestDetailsMustMatchCredential(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	n := startNode(t, c, c.enrol(t, "one", now), func(cfg *Config) { cfg.AdmitTimeout = time.Minute })
	old := c.enrol(t, "mixer", now)
	renewed := c.enrolKey(t, old.key, "mixer", now.Add(time.Second))
	_, cred := identity.SplitBundle(old.bundle)
	l := newListener(t, old, func(s network.Stream) {
		writeAdmitFrame(s, admitFrame{Kind: admitCredential, Chain: encodeChain(cred)})
		writeAdmitFrame(s, admitFrame{Kind: admitDetails, Chain: encodeChain(renewed.chain)})
		s.CloseWrite()
	})
	if err := l.h.Connect(context.Background(), peer.AddrInfo{ID: n.ID(), Addrs: n.host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the mixed presentation refused", func() bool { return n.isBlocked(l.h.ID()) })
	if n.isAdmitted(l.h.ID()) {
		t.Fatal("a peer whose details are not its credential's certificate is admitted")
	}
}
