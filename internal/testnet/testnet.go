// Package testnet holds what the project's device-level tests share: a
// throwaway CA that enrols devices, and real devices (device.Open) on
// loopback; with internal/check's waiting and leak helpers. Only tests
// import it.
package testnet

import (
	"context"
	"crypto/x509"
	"log/slog"
	"math/big"
	"os"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/check"
	"github.com/medmesh/medmesh/mesh"
	"github.com/medmesh/medmesh/node"
)

// Eventually waits until cond holds (check.Eventually).
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	check.Eventually(t, within, what, cond)
}

// LeakOptions is check.LeakOptions.
func LeakOptions(extra ...goleak.Option) []goleak.Option { return check.LeakOptions(extra...) }

// Logger discards, unless MEDMESH_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("MEDMESH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// CA is a throwaway trust's CA: its root, or a site issuing CA (Root set).
type CA struct {
	CA   *identity.CA
	Root *identity.CA // the trust root of a site CA; nil for a root
}

// Site makes a site issuing CA under root c.
func (c *CA) Site(t testing.TB, site string) *CA {
	t.Helper()
	s, err := c.CA.NewSiteCA(site, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &CA{CA: s, Root: c.CA}
}

// NewCA makes a root CA.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca, err := identity.NewRootCA("General Hospital", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &CA{CA: ca}
}

// Trust is a fresh trust store holding the root.
func (c *CA) Trust(t testing.TB) *identity.Trust {
	root := c.CA
	if c.Root != nil {
		root = c.Root
	}
	tr, err := identity.NewTrust([]*x509.Certificate{root.Cert})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// CRL is a CRL of the CA numbered n revoking the certificates of ids.
func (c *CA) CRL(t testing.TB, n int64, ids ...*Identity) []byte {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, id := range ids {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: id.Chain[0].SerialNumber, RevocationTime: time.Now()})
	}
	der, err := c.CA.CreateCRL(big.NewInt(n), entries, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// Identity is an enrolled device: keys, certificate chain and a store
// (in memory unless replaced).
type Identity struct {
	Name  string
	Key   *identity.DeviceKey
	Chain []*x509.Certificate // as device.crt: the staff chain, then the admission credential
	Store ds.Batching
}

// Enrol makes a device key and has the CA sign it (roles optional).
func (c *CA) Enrol(t testing.TB, name string, roles ...string) *Identity {
	t.Helper()
	k, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := identity.CreateCSR(k, identity.Details{Name: name, StaffID: name})
	r, _ := identity.ParseCSR(csr)
	cert, err := c.CA.Sign(r, identity.SignOptions{Roles: roles}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := c.CA.Bundle(cert)
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := identity.ParseCertificates(bundle)
	return &Identity{Name: name, Key: k, Chain: chain, Store: dssync.MutexWrap(ds.NewMapDatastore())}
}

// Peer is a running device on loopback.
type Peer struct {
	D       *device.Device
	N       *node.Node
	C       *conversations.Service
	M       *mesh.Service
	ID      peer.ID
	Ident   *Identity
	stopped bool
}

// Stop closes the device (once).
func (p *Peer) Stop() {
	if !p.stopped {
		p.stopped = true
		p.D.Close()
	}
}

// Boot bootstraps to the given peers.
func Boot(ps ...*Peer) device.Option {
	var infos []peer.AddrInfo
	for _, p := range ps {
		infos = append(infos, peer.AddrInfo{ID: p.ID, Addrs: p.N.Host().Addrs()})
	}
	return device.WithBootstrap(infos...)
}

// Start runs the device of id on loopback with a one-second anti-entropy
// period (later options override), stopped when the test ends.
func Start(t testing.TB, c *CA, id *Identity, opts ...device.Option) *Peer {
	t.Helper()
	all := append([]device.Option{device.WithIdentity(id.Key, id.Chain, c.Trust(t)), device.WithStore(id.Store),
		device.WithListen("/ip4/127.0.0.1/tcp/0"), device.WithLogger(Logger()), device.WithTimers(time.Second, 0)}, opts...)
	d, err := device.Open(context.Background(), "", nil, all...)
	if err != nil {
		t.Fatal(err)
	}
	p := &Peer{D: d, N: d.Node(), C: d.Conversations(), M: d.Mesh(), ID: d.ID(), Ident: id}
	t.Cleanup(p.Stop)
	return p
}

// Knows waits until p can seal to each of others (it holds their prekeys).
func Knows(t testing.TB, p *Peer, others ...*Peer) {
	t.Helper()
	for _, o := range others {
		Eventually(t, 15*time.Second, p.Ident.Name+" knows "+o.Ident.Name, func() bool {
			_, err := p.N.Recipient(o.ID, time.Now())
			return err == nil
		})
	}
}

// Texts lists the texts of a conversation's messages on p.
func Texts(p *Peer, id chat.ConversationID) []string {
	msgs, err := p.C.Messages(id)
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range msgs {
		out = append(out, m.Text)
	}
	return out
}

// Send posts text, failing the test on error.
func Send(t testing.TB, p *Peer, id chat.ConversationID, text string) crdt.OpID {
	t.Helper()
	op, err := p.C.Send(id, text, chat.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return op
}

// Joined reports whether p's own view of conversation id lists n members.
func Joined(p *Peer, id chat.ConversationID, n int) bool {
	st, err := p.C.State(id)
	return err == nil && len(st.Members) == n
}
