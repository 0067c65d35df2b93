package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/store"
	"github.com/medmesh/medmesh/witness"
)

// The key holder of an anchor (or archive member) — a device whose own
// certificate carries a witness role, and which keeps an audit trail like
// any other — writes the kept witness answer itself, in its own name:
// Witness = Device = itself, signed with its device key, its own
// certificate chain attached. CheckWitness finds a chain to ca.crt with
// the role anchor, and `audit verify` reports the trail as witnessed. No
// honest witness ever answers itself (a device never deposits with
// itself), so such an answer can only be the key holder's: it replaces
// an answer of another witness that showed truncation or evidence.
func TestRedteam10AnchorWitnessesItself(t *testing.T) {
	var out bytes.Buffer
	e := testEnv(&out)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := t.TempDir()
	ca := filepath.Join(root, "ca")
	cli(t, e, "ca", "init", "--dir", ca, "--name", "General Hospital")
	dir := filepath.Join(root, "anchor")
	cli(t, e, "init", "--dir", dir, "--name", "anchor", "--staff-id", "anchor", "--ca", filepath.Join(ca, "ca.crt"))
	cli(t, e, "ca", "sign", "--dir", ca, "--csr", filepath.Join(dir, "device.csr"), "--out", filepath.Join(dir, "device.crt"), "--roles", "anchor")
	d, err := startDevice(ctx, e, runOptions{dir: dir, api: "127.0.0.1:0", listen: []string{"/ip4/127.0.0.1/tcp/0"}, lockAfter: time.Hour},
		[]byte("device-secret"), e.logger())
	if err != nil {
		t.Fatal(err)
	}
	code, _, c := api(t, d, "POST", "/app/unlock", map[string]string{"passphrase": "device-secret"})
	if code != http.StatusOK {
		t.Fatalf("unlock: %d", code)
	}
	api(t, d, "POST", "/app/lock", nil, c...)
	if err := d.d.Audit().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	d.close()

	// The key holder's answer, in its own name.
	k, err := identity.LoadDeviceKey(dir, []byte("device-secret"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := device.OpenAudit(dir, []byte("device-secret"))
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := a.Head(ctx)
	a.Close()
	if err != nil || h.Seq == 0 {
		t.Fatal(h.Seq, err)
	}
	hrec, err := h.Record()
	if err != nil {
		t.Fatal(err)
	}
	certs, err := os.ReadFile(filepath.Join(dir, identity.DeviceCertFile))
	if err != nil {
		t.Fatal(err)
	}
	me := k.PeerID()
	raw := rt10Answer(t, k.Identity, me, me, hrec, certs, time.Now())
	st, err := store.Open(filepath.Join(dir, device.StoreDir), []byte("device-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, ds.NewKey("/witness/answer"), raw); err != nil {
		t.Fatal(err)
	}
	st.Close()

	out.Reset()
	cmd := newRootCmd(e)
	cmd.SetArgs([]string{"audit", "verify", "--dir", dir})
	if err := cmd.ExecuteContext(ctx); err == nil {
		t.Fatalf("verify accepted an answer the anchor's key holder signed for itself: %s", strings.TrimSpace(out.String()))
	} else if !strings.Contains(err.Error(), "names the device itself") {
		t.Fatalf("verify refused the self-signed answer for another reason: %v", err)
	}
	// Offline checks refuse it too, whatever the trust roots say of the signer.
	trust, err := identity.LoadTrust(filepath.Join(dir, identity.TrustFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := witness.CheckWitness(witness.Answer{Device: me, Witness: me, Time: time.Now(), Certs: certs}, trust, device.WitnessRoles...); err == nil {
		t.Fatal("CheckWitness accepts an anchor as its own witness")
	}
}

// rt10Answer is a witness answer (witness.answerBody, signed) as a
// witness's key signs it.
func rt10Answer(t *testing.T, sk ed25519.PrivateKey, dev, wit peer.ID, held, certs []byte, at time.Time) []byte {
	t.Helper()
	type body struct {
		V        uint8  `cbor:"1,keyasint"`
		Device   []byte `cbor:"2,keyasint"`
		Witness  []byte `cbor:"3,keyasint"`
		Time     int64  `cbor:"4,keyasint"`
		Held     []byte `cbor:"5,keyasint,omitempty"`
		Conflict []byte `cbor:"6,keyasint,omitempty"`
		Want     uint64 `cbor:"7,keyasint,omitempty"`
		Certs    []byte `cbor:"8,keyasint,omitempty"`
	}
	type signed struct {
		Body []byte `cbor:"1,keyasint"`
		Sig  []byte `cbor:"2,keyasint"`
	}
	b, err := detcbor.Marshal(body{V: 1, Device: []byte(dev), Witness: []byte(wit), Time: at.UnixNano(), Held: held, Certs: certs})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := detcbor.Marshal(signed{Body: b, Sig: ed25519.Sign(sk, append([]byte(witness.AnswerDomain), b...))})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// rt10Enrol makes a device directory signed by the CA in ca, with roles.
func rt10Enrol(t *testing.T, e *env, root, ca, who string, roles ...string) string {
	t.Helper()
	dir := filepath.Join(root, who)
	cli(t, e, "init", "--dir", dir, "--name", who, "--staff-id", who, "--ca", filepath.Join(ca, "ca.crt"))
	args := []string{"ca", "sign", "--dir", ca, "--csr", filepath.Join(dir, "device.csr"), "--out", filepath.Join(dir, "device.crt")}
	if len(roles) > 0 {
		args = append(args, "--roles", strings.Join(roles, ","))
	}
	cli(t, e, args...)
	return dir
}

// A hostile anchor (or one whose clock is wrong) answers an honest device
// with its genuine head, its own valid certificate chain — and a time
// outside that chain's validity (here 2100). The device keeps the answer
// (Service.answered checks neither the witness's chain nor its time: only
// `audit verify` does, offline), so the honest trail's `audit verify`
// fails from then on, with the error it gives for an answer the key
// holder forged.
func TestRedteam10AnchorAnswerTimeFailsHonestVerify(t *testing.T) {
	var out bytes.Buffer
	e := testEnv(&out)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := t.TempDir()
	ca := filepath.Join(root, "ca")
	cli(t, e, "ca", "init", "--dir", ca, "--name", "General Hospital")
	anchorDir, amiraDir := rt10Enrol(t, e, root, ca, "anchor", "anchor"), rt10Enrol(t, e, root, ca, "amira")
	d, err := startDevice(ctx, e, runOptions{dir: amiraDir, api: "127.0.0.1:0", listen: []string{"/ip4/127.0.0.1/tcp/0"}, lockAfter: time.Hour},
		[]byte("device-secret"), e.logger())
	if err != nil {
		t.Fatal(err)
	}
	code, _, c := api(t, d, "POST", "/app/unlock", map[string]string{"passphrase": "device-secret"})
	if code != http.StatusOK {
		t.Fatalf("unlock: %d", code)
	}
	api(t, d, "POST", "/app/lock", nil, c...)
	if err := d.d.Audit().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	head := d.d.Audit().Head()
	d.close()
	hrec, err := head.Record()
	if err != nil {
		t.Fatal(err)
	}
	ak, err := identity.LoadDeviceKey(anchorDir, []byte("device-secret"))
	if err != nil {
		t.Fatal(err)
	}
	mk, err := identity.LoadDeviceKey(amiraDir, []byte("device-secret"))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := os.ReadFile(filepath.Join(anchorDir, identity.DeviceCertFile))
	if err != nil {
		t.Fatal(err)
	}
	// What the device keeps of the anchor's answer (as answered does).
	raw := rt10Answer(t, ak.Identity, mk.PeerID(), ak.PeerID(), hrec, certs, time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC))
	if _, err := witness.DecodeAnswer(raw, mk.Identity.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(amiraDir, device.StoreDir), []byte("device-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, ds.NewKey("/witness/answer"), raw); err != nil {
		t.Fatal(err)
	}
	st.Close()
	out.Reset()
	cmd := newRootCmd(e)
	cmd.SetArgs([]string{"audit", "verify", "--dir", amiraDir})
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("the honest trail fails verify because of what an anchor answered: %v", err)
	}
	if got := out.String(); !strings.Contains(got, "witness answer unusable") || !strings.Contains(got, "not witnessed") {
		t.Fatalf("verify does not say the kept answer is unusable: %s", got)
	}
	// The running device would not have kept it: VetAnswer refuses an
	// answer timed away from its clock, and one whose time is near but
	// outside the certificate's validity is refused by CheckWitness.
	trust, err := identity.LoadTrust(filepath.Join(amiraDir, identity.TrustFile))
	if err != nil {
		t.Fatal(err)
	}
	a, err := witness.DecodeAnswer(raw, mk.Identity.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := device.VetAnswer(a, trust, time.Now()); !errors.Is(err, witness.ErrAnswerTime) {
		t.Fatalf("the device would keep an answer timed 2100: %v", err)
	}
	if err := device.VetAnswer(a, trust, a.Time); !errors.Is(err, witness.ErrNotWitness) {
		t.Fatalf("a device whose clock agrees with the answer's (2100) would keep it: %v", err)
	}
	now := time.Now()
	good, err := witness.DecodeAnswer(rt10Answer(t, ak.Identity, mk.PeerID(), ak.PeerID(), hrec, certs, now), mk.Identity.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := device.VetAnswer(good, trust, now.Add(device.AnswerSkew/2)); err != nil {
		t.Fatalf("an honest anchor's answer, clocks within the skew: %v", err)
	}
	// A colleague without the anchor role, answering in time: not a witness.
	colleague := rt10Enrol(t, e, root, ca, "bob")
	bk, err := identity.LoadDeviceKey(colleague, []byte("device-secret"))
	if err != nil {
		t.Fatal(err)
	}
	bcerts, err := os.ReadFile(filepath.Join(colleague, identity.DeviceCertFile))
	if err != nil {
		t.Fatal(err)
	}
	fromBob, err := witness.DecodeAnswer(rt10Answer(t, bk.Identity, mk.PeerID(), bk.PeerID(), hrec, bcerts, now), mk.Identity.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := device.VetAnswer(fromBob, trust, now); !errors.Is(err, witness.ErrNotWitness) {
		t.Fatalf("a colleague's answer: %v", err)
	}
}
