package device_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/keywrap"
	"github.com/medmesh/medmesh/store"
)

var fastKDF = keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}

// dirDevice makes a device directory as `medmesh init` and `ca sign` do
// (device.key, ca.crt, device.crt) plus the api.token `medmesh run`
// writes, and returns the identity the CA enrolled.
func dirDevice(t *testing.T, c *testnet.CA, dir string, pass []byte) *testnet.Identity {
	t.Helper()
	k, err := identity.InitDevice(dir, identity.Details{Name: "victim", StaffID: "victim"}, identity.EncodeCertificates(c.CA.Cert), pass, fastKDF)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := os.ReadFile(filepath.Join(dir, identity.DeviceCSRFile))
	if err != nil {
		t.Fatal(err)
	}
	r, err := identity.ParseCSR(csr)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.CA.Sign(r, identity.SignOptions{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	chainPEM := c.CA.Chain(cert)
	if err := os.WriteFile(filepath.Join(dir, identity.DeviceCertFile), chainPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, identity.APITokenFile), []byte("token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	chain, _ := identity.ParseCertificates(chainPEM)
	return &testnet.Identity{Name: "victim", Key: k, Chain: chain}
}

// TestRevocationDestroysKeys: a device opened from its directory learns
// over the mesh (a colleague gossips the CRL) that its own certificate is
// revoked. Without the process crashing, it destroys device.key (the
// long-term identity and KEM keys), the store's key file, the store's
// data and api.token; a restart fails with ErrRevoked. A thief who takes
// the phone after the CRL reached it, passphrase and all, finds nothing
// that opens old welcomes or the store.
func TestRevocationDestroysKeys(t *testing.T) {
	c := testnet.NewCA(t)
	dir := t.TempDir()
	pass := []byte("device passphrase")
	vid := dirDevice(t, c, dir, pass)
	b := testnet.Start(t, c, c.Enrol(t, "bob"))
	revoked := make(chan struct{})
	v, err := device.Open(context.Background(), dir, pass, device.WithKDF(fastKDF),
		device.WithListen("/ip4/127.0.0.1/tcp/0"), device.WithLogger(testnet.Logger()),
		device.WithBootstrap(peer.AddrInfo{ID: b.ID, Addrs: b.N.Host().Addrs()}),
		device.WithOnRevoked(func() { close(revoked) }))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	destroyed := []string{identity.DeviceKeyFile, identity.APITokenFile, filepath.Join(device.StoreDir, store.KeyFile), filepath.Join(device.StoreDir, store.DataDir)}
	for _, f := range destroyed {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("before the revocation: %v", err)
		}
	}
	testnet.Eventually(t, 15*time.Second, "bob admitted the victim", func() bool {
		known, _ := b.N.KnownStaff(v.ID())
		return known
	})

	if _, err := b.N.SubmitCRL(context.Background(), c.CRL(t, 1, vid)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-revoked:
	case <-time.After(15 * time.Second):
		t.Fatal("the victim did not learn of its revocation")
	}
	<-v.Done()
	for _, f := range destroyed {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s survives the revocation: %v", f, err)
		}
	}
	if err := v.Close(); err != nil && !errors.Is(err, store.ErrWiped) {
		t.Fatalf("close after the wipe: %v", err)
	}
	if _, err := device.Open(context.Background(), dir, pass, device.WithKDF(fastKDF), device.WithListen("/ip4/127.0.0.1/tcp/0")); !errors.Is(err, device.ErrRevoked) {
		t.Fatalf("restart after revocation: %v, want ErrRevoked", err)
	}
}

// TestRevocationDestroysPrekeys: with a store the device does not own
// (WithStore), the wipe still deletes the prekey ring from it, and the
// expiry loop, still running until Close, does not write it back.
func TestRevocationDestroysPrekeys(t *testing.T) {
	c := testnet.NewCA(t)
	id := c.Enrol(t, "victim")
	v := testnet.Start(t, c, id, device.WithExpiryEvery(5*time.Millisecond))
	ring := ds.NewKey("/keys/prekeys")
	if has, _ := id.Store.Has(context.Background(), ring); !has {
		t.Fatal("no prekey ring stored: the test proves nothing")
	}
	if _, err := v.N.SubmitCRL(context.Background(), c.CRL(t, 1, id)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, "the device stopped", func() bool {
		select {
		case <-v.D.Done():
			return true
		default:
			return false
		}
	})
	for range 3 {
		if err := v.D.Expire(); err != nil {
			t.Logf("expiry after the wipe: %v", err)
		}
	}
	if has, _ := id.Store.Has(context.Background(), ring); has {
		t.Fatal("the prekey ring survives the revocation")
	}
}

// TestRestartFinishesWipe: power lost after the revoked marker was written
// but before the keys were shredded; the next start shreds them and
// refuses with ErrRevoked.
func TestRestartFinishesWipe(t *testing.T) {
	c := testnet.NewCA(t)
	dir := t.TempDir()
	pass := []byte("device passphrase")
	dirDevice(t, c, dir, pass)
	if err := os.WriteFile(filepath.Join(dir, identity.RevokedFile), []byte("revoked\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := device.Open(context.Background(), dir, pass, device.WithKDF(fastKDF), device.WithListen("/ip4/127.0.0.1/tcp/0")); !errors.Is(err, device.ErrRevoked) {
		t.Fatalf("open a revoked directory: %v, want ErrRevoked", err)
	}
	for _, f := range []string{identity.DeviceKeyFile, identity.APITokenFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s survives a restart of a revoked device: %v", f, err)
		}
	}
}
