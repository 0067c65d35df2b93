package node

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// FuzzFrames: whatever bytes a peer sends on /medmesh/directory/2 (or
// /medmesh/admit/2, or the trust topic) are refused with an error or
// decode to messages within the wire limits, never a panic; a frame that
// decodes writes back to the same bytes.
func FuzzFrames(f *testing.F) {
	var seed bytes.Buffer
	writeFrame(&seed, directoryMsg{Peers: []peerAddrs{{ID: []byte("p"), Addrs: [][]byte{{4, 127, 0, 0, 1}}}},
		Entries: []dirEntry{{Chain: [][]byte{{0x30, 0x03, 0x02, 0x01, 0x01}}}}, Sums: [][]byte{make([]byte, entrySumSize)}})
	f.Add(seed.Bytes())
	seed.Reset()
	writeAdmitFrame(&seed, admitFrame{Kind: admitCredential, Chain: [][]byte{{0x30, 0x03, 0x02, 0x01, 0x01}}})
	writeAdmitFrame(&seed, admitFrame{Kind: admitCRL, CRL: []byte{0x30, 0x00}})
	f.Add(seed.Bytes())
	seed.Reset()
	writeFrame(&seed, wantMsg{Sums: [][]byte{make([]byte, entrySumSize)}})
	f.Add(seed.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		var d directoryMsg
		if readFrame(msgio.NewVarintReaderSize(bytes.NewReader(data), maxDirMsg), &d, maxDirMsg) == nil && d.check() == nil {
			var again bytes.Buffer
			if err := writeFrame(&again, d); err != nil || !bytes.HasPrefix(data, again.Bytes()) {
				t.Fatalf("directory frame does not round-trip: %v", err)
			}
			for _, e := range d.Entries {
				if chain, err := decodeChain(e.Chain); err == nil && len(chain) == 0 {
					t.Fatal("empty chain decoded")
				}
			}
		}
		var w wantMsg
		readFrame(msgio.NewVarintReaderSize(bytes.NewReader(data), maxDirMsg), &w, maxWantMsg)
		r := bufio.NewReader(bytes.NewReader(data))
		for limit := maxChainFrame; ; limit = maxCRLFrame {
			f, err := readAdmitFrame(r, limit)
			if err != nil {
				break
			}
			var again bytes.Buffer
			if err := writeAdmitFrame(&again, f); err != nil || !bytes.Contains(data, again.Bytes()) {
				t.Fatalf("admission frame does not round-trip: %v", err)
			}
		}
		var m trustMsg
		decode(data, &m, maxTrustMsg)
	})
}

// FuzzStoredEntry: a directory entry read back from the store — damaged or
// crafted — is an error or a bounded entry; never a panic.
func FuzzStoredEntry(f *testing.F) {
	raw, _ := detcbor.Marshal(dirEntry{Chain: [][]byte{{0x30, 0x03, 0x02, 0x01, 0x01}}, Prekey: []byte{1, 2, 3}})
	f.Add(raw)
	f.Add([]byte{0xa1, 0x01, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		var de dirEntry
		if decode(data, &de, maxEntryBytes) != nil {
			return
		}
		if chain, err := decodeChain(de.Chain); err == nil && (len(chain) == 0 || len(chain) > maxChainCerts) {
			t.Fatalf("chain of %d certificates decoded", len(chain))
		}
		if de.Prekey != nil {
			e2e.DecodePrekey(de.Prekey)
		}
	})
}
