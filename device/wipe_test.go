package device_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
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
	chainPEM, err := c.CA.Bundle(cert)
	if err != nil {
		t.Fatal(err)
	}
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

// sealedHolding returns the sealed bytes (as on disk) of every value in st
// whose plaintext contains marker.
func sealedHolding(t *testing.T, st *store.Store, marker string) [][]byte {
	t.Helper()
	ctx := context.Background()
	res, err := st.Query(ctx, query.Query{})
	if err != nil {
		t.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, e := range all {
		if bytes.Contains(e.Value, []byte(marker)) {
			s, err := st.Sealed(ctx, ds.NewKey(e.Key))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
	}
	return out
}

// onDisk lists the files under dir holding any trace of the sealed values
// (whole, nonce, a window of ciphertext) or the plaintext marker.
func onDisk(t *testing.T, dir, marker string, sealed [][]byte) []string {
	t.Helper()
	needles := [][]byte{[]byte(marker)}
	for _, s := range sealed {
		needles = append(needles, s, s[:24], s[40:72])
	}
	var hits []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		for _, n := range needles {
			if bytes.Contains(b, n) {
				hits = append(hits, filepath.Base(p))
				break
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

// TestDeletedMessageLeavesDisk: a message deleted through the conversation
// service (conversations.Service.Delete on the sender; the delete op
// applied on the recipient) is, after the store's purge, in no file of
// either device's store directory: neither its text nor the sealed record
// that held it. Before the delete the scan finds the sealed record.
func TestDeletedMessageLeavesDisk(t *testing.T) {
	const marker = "PATIENT-MARKER-ward7-bed4"
	ctx := context.Background()
	c := testnet.NewCA(t)
	pass := []byte("device passphrase")
	open := func(id *testnet.Identity) (string, *store.Store) {
		dir := t.TempDir()
		st, err := store.Open(dir, pass, store.WithKDF(fastKDF), store.WithPurgeDelay(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		id.Store = st
		return dir, st
	}
	aid, bid := c.Enrol(t, "alice"), c.Enrol(t, "bob")
	adir, ast := open(aid)
	bdir, bst := open(bid)
	defer ast.Close()
	defer bst.Close()
	a := testnet.Start(t, c, aid)
	b := testnet.Start(t, c, bid, testnet.Boot(a))
	defer a.Stop() // before the stores close
	defer b.Stop()
	testnet.Knows(t, a, b)
	id, err := a.C.Create("ward", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "bob joined", func() bool { return testnet.Joined(b, id, 2) })
	msg := testnet.Send(t, a, id, marker+": query sepsis")
	testnet.Eventually(t, 15*time.Second, "bob has the message", func() bool { return slices.Contains(testnet.Texts(b, id), marker+": query sepsis") })
	devices := []struct {
		name string
		dir  string
		st   *store.Store
		held [][]byte
	}{{"sender", adir, ast, nil}, {"recipient", bdir, bst, nil}}
	for i := range devices {
		d := &devices[i]
		d.held = sealedHolding(t, d.st, marker)
		if len(d.held) == 0 || len(onDisk(t, d.dir, marker, d.held)) == 0 {
			t.Fatalf("%s: the message's record is not on disk: the scan proves nothing", d.name)
		}
	}

	if err := a.C.Delete(id, msg); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "bob applied the delete", func() bool {
		return len(sealedHolding(t, bst, marker)) == 0
	})
	for _, d := range devices {
		if left := sealedHolding(t, d.st, marker); len(left) > 0 {
			t.Fatalf("%s: the text is still readable in the store", d.name)
		}
		if err := d.st.Purge(ctx); err != nil {
			t.Fatal(err)
		}
		if hits := onDisk(t, d.dir, marker, d.held); len(hits) > 0 {
			t.Errorf("%s: the deleted message is still on disk after the purge, in %v", d.name, hits)
		}
	}
}
