package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/internal/check"
	"github.com/medmesh/medmesh/store"
)

// TestAuditTruncationWitnessed: the attack a device's own key holder can
// make on its audit trail — put back an older copy of the device's
// directory, dropping the entries written since. The anchor the device
// met holds its newer head: the restored device says so in its status as
// soon as it meets the anchor again, and `audit verify` fails on the
// restored directory, by itself (the anchor's answer is kept) and against
// the head exported from the anchor's directory, while the real one
// verifies.
func TestAuditTruncationWitnessed(t *testing.T) {
	var out bytes.Buffer
	e := testEnv(&out)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := t.TempDir()
	ca := filepath.Join(root, "ca")
	cli(t, e, "ca", "init", "--dir", ca, "--name", "General Hospital")
	enrol := func(who string, roles ...string) string {
		dir := filepath.Join(root, who)
		cli(t, e, "init", "--dir", dir, "--name", who, "--staff-id", who, "--ca", filepath.Join(ca, "ca.crt"))
		args := []string{"ca", "sign", "--dir", ca, "--csr", filepath.Join(dir, "device.csr"), "--out", filepath.Join(dir, "device.crt")}
		if len(roles) > 0 {
			args = append(args, "--roles", strings.Join(roles, ","))
		}
		cli(t, e, args...)
		return dir
	}
	anchorDir, amiraDir := enrol("anchor", "anchor"), enrol("amira")
	start := func(dir string, boot *running) *running {
		o := runOptions{dir: dir, api: "127.0.0.1:0", listen: []string{"/ip4/127.0.0.1/tcp/0"}, lockAfter: time.Hour}
		if boot != nil {
			o.bootstrap = []peer.AddrInfo{{ID: boot.n.ID(), Addrs: boot.n.Host().Addrs()}}
		}
		d, err := startDevice(ctx, e, o, []byte("device-secret"), e.logger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.close)
		return d
	}
	session := func(d *running) {
		code, _, c := api(t, d, "POST", "/app/unlock", map[string]string{"passphrase": "device-secret"})
		if code != http.StatusOK {
			t.Fatalf("unlock: %d", code)
		}
		if code, b, _ := api(t, d, "POST", "/app/lock", nil, c...); code != http.StatusOK {
			t.Fatalf("lock: %d %s", code, b)
		}
	}
	stats := func(d *running) audit.Stats {
		var st struct{ Audit audit.Stats }
		_, b, _ := api(t, d, "GET", "/api/v1/status", nil)
		json.Unmarshal(b, &st)
		return st.Audit
	}
	// witnessed waits until the anchor vouches for entry seq or a later
	// one (the trail may grow meanwhile: the device deposits again as it
	// does), and returns the entry it vouches for.
	witnessed := func(d *running, seq uint64) uint64 {
		t.Helper()
		check.Eventually(t, 30*time.Second, "the anchor vouches for the trail's newest entry", func() bool {
			w := stats(d).Witnessed
			return w != nil && w.Seq >= seq
		})
		w := stats(d).Witnessed
		if w.Error != "" {
			t.Fatalf("witnessed: %s", w.Error)
		}
		return w.Seq
	}

	anchor := start(anchorDir, nil)
	amira := start(amiraDir, anchor)
	session(amira)
	if err := amira.d.Audit().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	witnessed(amira, amira.d.Audit().Head().Seq)
	amira.close()
	// The older copy, kept aside.
	oldDir := filepath.Join(root, "amira-old")
	if err := os.CopyFS(oldDir, os.DirFS(amiraDir)); err != nil {
		t.Fatal(err)
	}
	amira = start(amiraDir, anchor)
	session(amira)
	session(amira)
	if err := amira.d.Audit().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	last := witnessed(amira, amira.d.Audit().Head().Seq)
	amira.close()

	// The older copy put back in its place runs, and meets the anchor.
	restored := start(oldDir, anchor)
	check.Eventually(t, 30*time.Second, "the restored device learns the anchor holds a newer head", func() bool {
		w := stats(restored).Witnessed
		return w != nil && w.Error != ""
	})
	w := stats(restored).Witnessed
	if w.Seq < last || !strings.Contains(w.Error, "truncated") {
		t.Fatalf("restored device's status: %+v, want the anchor's entry (at least %d) and truncation", w, last)
	}
	newest := w.Seq // the entry the anchor holds
	restored.close()
	anchor.close()

	verify := func(args ...string) error {
		out.Reset()
		c := newRootCmd(e)
		c.SetArgs(append([]string{"audit", "verify"}, args...))
		return c.ExecuteContext(ctx)
	}
	if err := verify("--dir", oldDir); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("verify of the restored copy, on its own: %v", err)
	}
	headFile := filepath.Join(root, "amira-at-anchor.head")
	cli(t, e, "audit", "head", "--dir", anchorDir, "--peer", amira.n.ID().String(), "--out", headFile)
	if err := verify("--dir", oldDir, "--head", headFile); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("verify of the restored copy against the anchor's head: %v", err)
	}
	if err := verify("--dir", amiraDir, "--head", headFile); err != nil {
		t.Fatalf("the real trail against the anchor's head: %v", err)
	}
	if err := verify("--dir", amiraDir); err != nil || !strings.Contains(out.String(), "a witness held") {
		t.Fatalf("the real trail against its kept witnessed head: %v %s", err, out.String())
	}
	// The anchor's own trail: no witness answered it.
	if err := verify("--dir", anchorDir); err != nil || !strings.Contains(out.String(), "not witnessed") {
		t.Fatalf("the anchor's trail: %v %s", err, out.String())
	}
	// The key holder writes the kept answer itself: a head it signs.
	forge := func(dir string, val []byte) {
		t.Helper()
		st, err := store.Open(filepath.Join(dir, device.StoreDir), []byte("device-secret"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := st.Put(ctx, ds.NewKey("/witness/answer"), val); err != nil {
			t.Fatal(err)
		}
	}
	a, err := device.OpenAudit(oldDir, []byte("device-secret"))
	if err != nil {
		t.Fatal(err)
	}
	own, _, err := a.Head(ctx)
	a.Close()
	if err != nil {
		t.Fatal(err)
	}
	ownRec, err := own.Record()
	if err != nil {
		t.Fatal(err)
	}
	forged := filepath.Join(root, "amira-forged")
	if err := os.CopyFS(forged, os.DirFS(oldDir)); err != nil {
		t.Fatal(err)
	}
	forge(forged, ownRec)
	if err := verify("--dir", forged); err == nil || !strings.Contains(err.Error(), "witness answer") {
		t.Fatalf("verify with a kept answer the key holder wrote: %v", err)
	}

	// The restored copy grows back past the entry the anchor holds: the
	// anchor refuses its new head, keeps it as evidence and says so.
	anchor = start(anchorDir, nil)
	restored = start(oldDir, anchor)
	for restored.d.Audit().Head().Seq <= newest {
		session(restored)
		if err := restored.d.Audit().Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	check.Eventually(t, 30*time.Second, "the regrown device learns the anchor holds evidence against it", func() bool {
		w := stats(restored).Witnessed
		return w != nil && strings.Contains(w.Error, "do not extend")
	})
	restored.close()
	anchor.close()
	if err := verify("--dir", oldDir); err == nil || !strings.Contains(err.Error(), "do not extend") {
		t.Fatalf("verify of the regrown copy: %v", err)
	}
	evidence := filepath.Join(root, "amira-evidence.head")
	cli(t, e, "audit", "head", "--dir", anchorDir, "--peer", amira.n.ID().String(), "--out", evidence)
	if raw, err := os.ReadFile(evidence); err != nil || !strings.Contains(string(raw), `"conflict"`) {
		t.Fatalf("the exported head carries no evidence: %v %s", err, raw)
	}
	if err := verify("--dir", oldDir, "--head", evidence); err == nil || !strings.Contains(err.Error(), "do not extend") {
		t.Fatalf("verify of the regrown copy against the anchor's evidence: %v", err)
	}

	// The anchor holds no head of a device it never met.
	c := newRootCmd(e)
	c.SetArgs([]string{"audit", "head", "--dir", anchorDir, "--peer", anchor.n.ID().String()})
	if err := c.ExecuteContext(ctx); err == nil || !strings.Contains(err.Error(), "holds no audit head") {
		t.Fatalf("head of an unknown device: %v", err)
	}
}
