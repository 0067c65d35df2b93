package node

import (
	"bufio"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// Protocols.
const (
	ProtoAdmit     = "/medmesh/admit/2"
	ProtoDirectory = "/medmesh/directory/2"
	TrustTopic     = "/medmesh/trust/1"
)

// Wire limits.
const (
	maxChainCerts = 3
	maxCertBytes  = 8 << 10
	maxCRLs       = 64
	maxCRLBytes   = 4 << 20
	// maxChainFrame bounds a credential or details frame on
	// /medmesh/admit/2: a chain and its CBOR framing. It is all an
	// unadmitted peer can make us read.
	maxChainFrame = maxChainCerts*(maxCertBytes+8) + 64
	// maxCRLFrame bounds a CRL frame, read only from an admitted peer.
	maxCRLFrame     = maxCRLBytes + 64
	maxDirEntries   = 4096
	maxDirMsg       = 16 << 20
	maxEntryBytes   = 64 << 10 // a stored directory entry
	maxWantMsg      = maxDirEntries*(entrySumSize+2) + 16
	maxAddrsPerPeer = 16
	maxTrustMsg     = 4 << 20
)

// dirTimeout bounds a directory exchange.
const dirTimeout = 10 * time.Second

// admitFrame is one frame on /medmesh/admit/2 (varint length, then
// deterministic CBOR). Each side opens its own stream to the other and
// writes, in order: one credential frame (its admission credential chain,
// which names no one); then, once it has admitted the other side, one
// details frame (its staff certificate chain); and any number (at most
// maxCRLs) of CRL frames. A notice to a peer being thrown out is a
// credential frame and CRL frames.
type admitFrame struct {
	Kind  uint8    `cbor:"1,keyasint"`
	Chain [][]byte `cbor:"2,keyasint,omitempty"`
	CRL   []byte   `cbor:"3,keyasint,omitempty"`
}

// Admission frame kinds.
const (
	admitCredential = 1
	admitDetails    = 2
	admitCRL        = 3
)

// directoryMsg is a frame on /medmesh/directory/2. The initiator's offer
// carries the other admitted peers with their addresses, its own entry and
// the digests (entrySum) of the entries it can send; its second frame
// carries the entries the responder asked for (wantMsg).
type directoryMsg struct {
	Peers   []peerAddrs `cbor:"1,keyasint"`
	Entries []dirEntry  `cbor:"2,keyasint"`
	Sums    [][]byte    `cbor:"3,keyasint,omitempty"`
}

func (m *directoryMsg) check() error {
	if len(m.Entries) > maxDirEntries || len(m.Peers) > maxDirEntries || len(m.Sums) > maxDirEntries {
		return fmt.Errorf("%w: directory message too large", identity.ErrMalformed)
	}
	return nil
}

// wantMsg is the responder's frame: the offered digests it lacks.
type wantMsg struct {
	Sums [][]byte `cbor:"1,keyasint"`
}

// writeFrame writes v as one varint-length-prefixed deterministic-CBOR
// frame (as /medmesh/sync/1 does).
func writeFrame(w io.Writer, v any) error {
	data, err := detcbor.Marshal(v)
	if err != nil {
		return err
	}
	if len(data) > maxDirMsg {
		return fmt.Errorf("%w: frame of %d bytes", identity.ErrMalformed, len(data))
	}
	return msgio.NewVarintWriter(w).WriteMsg(data)
}

// readFrame reads one frame of at most limit bytes into v.
func readFrame(r msgio.Reader, v any, limit int) error {
	data, err := r.ReadMsg()
	if err != nil {
		return err
	}
	defer r.ReleaseMsg(data)
	if len(data) > limit {
		return fmt.Errorf("%w: frame of %d bytes", identity.ErrMalformed, len(data))
	}
	return decode(data, v, limit)
}

// dirEntry is a directory entry on the wire and in the store: a colleague's
// certificate chain (DER, device first) and signed KEM prekey.
type dirEntry struct {
	Chain  [][]byte `cbor:"1,keyasint"`
	Prekey []byte   `cbor:"2,keyasint,omitempty"` // e2e.EncodePrekey
}

type peerAddrs struct {
	ID    []byte   `cbor:"1,keyasint"`
	Addrs [][]byte `cbor:"2,keyasint"`
}

// trustMsg is a message on the trust topic.
type trustMsg struct {
	Kind   uint8    `cbor:"1,keyasint"`
	CRL    []byte   `cbor:"2,keyasint,omitempty"`
	Chain  [][]byte `cbor:"3,keyasint,omitempty"`
	Prekey []byte   `cbor:"4,keyasint,omitempty"`
}

const (
	kindCRL   = 1
	kindEntry = 2
)

func decodeChain(raw [][]byte) ([]*x509.Certificate, error) {
	if len(raw) == 0 || len(raw) > maxChainCerts {
		return nil, fmt.Errorf("%w: chain of %d certificates", identity.ErrMalformed, len(raw))
	}
	out := make([]*x509.Certificate, len(raw))
	for i, der := range raw {
		if len(der) > maxCertBytes {
			return nil, fmt.Errorf("%w: certificate of %d bytes", identity.ErrMalformed, len(der))
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", identity.ErrMalformed, err)
		}
		out[i] = c
	}
	return out, nil
}

func encodeChain(chain []*x509.Certificate) [][]byte {
	out := make([][]byte, len(chain))
	for i, c := range chain {
		out[i] = c.Raw
	}
	return out
}

func (f *admitFrame) check() error {
	switch f.Kind {
	case admitCredential, admitDetails:
		if len(f.Chain) == 0 || len(f.Chain) > maxChainCerts || f.CRL != nil {
			return fmt.Errorf("%w: chain frame", identity.ErrMalformed)
		}
	case admitCRL:
		if len(f.CRL) == 0 || len(f.CRL) > maxCRLBytes || f.Chain != nil {
			return fmt.Errorf("%w: CRL frame", identity.ErrMalformed)
		}
	default:
		return fmt.Errorf("%w: admission frame kind %d", identity.ErrMalformed, f.Kind)
	}
	return nil
}

// readAdmitFrame reads one frame of at most limit bytes: the length is
// checked before anything is allocated for the body.
func readAdmitFrame(r *bufio.Reader, limit int) (admitFrame, error) {
	var f admitFrame
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return f, err
	}
	if n == 0 || n > uint64(limit) {
		return f, fmt.Errorf("%w: admission frame of %d bytes, at most %d", identity.ErrMalformed, n, limit)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return f, err
	}
	if err := decode(data, &f, limit); err != nil {
		return f, err
	}
	return f, f.check()
}

// writeAdmitFrame writes one frame.
func writeAdmitFrame(w io.Writer, f admitFrame) error {
	data, err := detcbor.Marshal(f)
	if err != nil {
		return err
	}
	return msgio.NewVarintWriter(w).WriteMsg(data)
}

func toAddrInfo(p peerAddrs) (peer.AddrInfo, error) {
	id, err := peer.IDFromBytes(p.ID)
	if err != nil {
		return peer.AddrInfo{}, err
	}
	ai := peer.AddrInfo{ID: id}
	for i, b := range p.Addrs {
		if i == maxAddrsPerPeer {
			break
		}
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			continue
		}
		ai.Addrs = append(ai.Addrs, a)
	}
	return ai, nil
}

func decode(data []byte, v any, max int) error {
	if err := detcbor.Unmarshal(data, v, max); err != nil {
		return fmt.Errorf("%w: %v", identity.ErrMalformed, err)
	}
	return nil
}
