package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/internal/check"
)

// api calls a running device's API with its token (and, for /app/*, the
// app's Origin and CSRF header). It returns the status and the body.
func api(t *testing.T, d *running, method, path string, body any, cookies ...*http.Cookie) (int, []byte, []*http.Cookie) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	url := strings.TrimSuffix(d.url(), "/")
	req, err := http.NewRequest(method, url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if strings.HasPrefix(path, "/app/") {
		req.Header.Set("Origin", url)
		req.Header.Set("X-Medmesh-CSRF", "1")
		for _, c := range cookies {
			req.AddCookie(c)
		}
	} else {
		req.Header.Set("Authorization", "Bearer "+d.app.Token())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Cookies()
}

// TestAuditEndToEnd: two devices on loopback; Amira creates a
// conversation and sends an urgent message, Ben reads and acknowledges it,
// Ben's app is unlocked with a wrong then the right passphrase and
// locked. Both trails hold what happened, the API and the export hold no
// message text or title, both verify after the nodes stop, and a head
// exported before checks the trail.
func TestAuditEndToEnd(t *testing.T) {
	const secret, title = "Patient in bed 4 has a potassium of 6.9", "Ward 7 handover"
	var out bytes.Buffer
	e := testEnv(&out)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := t.TempDir()
	ca := filepath.Join(root, "ca")
	cli(t, e, "ca", "init", "--dir", ca, "--name", "General Hospital")
	var devs []*running
	for i, who := range []string{"ben", "amira"} {
		dir := filepath.Join(root, who)
		cli(t, e, "init", "--dir", dir, "--name", "Dr "+who, "--staff-id", who, "--ca", filepath.Join(ca, "ca.crt"))
		cli(t, e, "ca", "sign", "--dir", ca, "--csr", filepath.Join(dir, "device.csr"), "--out", filepath.Join(dir, "device.crt"))
		o := runOptions{dir: dir, api: "127.0.0.1:0", listen: []string{"/ip4/127.0.0.1/tcp/0"}, lockAfter: time.Hour}
		if i > 0 {
			o.bootstrap = []peer.AddrInfo{{ID: devs[0].n.ID(), Addrs: devs[0].n.Host().Addrs()}}
		}
		d, err := startDevice(ctx, e, o, []byte("device-secret"), e.logger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.close) // closing twice is harmless
		devs = append(devs, d)
	}
	ben, amira := devs[0], devs[1]
	check.Eventually(t, 20*time.Second, "devices meet", func() bool {
		_, err := amira.n.Recipient(ben.n.ID(), time.Now())
		return err == nil
	})

	code, b, _ := api(t, amira, "POST", "/api/v1/conversations", map[string]any{"title": title, "members": []string{ben.n.ID().String()}})
	var created struct{ ID string }
	if json.Unmarshal(b, &created); code != 201 || created.ID == "" {
		t.Fatalf("create: %d %s", code, b)
	}
	code, b, _ = api(t, amira, "POST", "/api/v1/conversations/"+created.ID+"/messages", map[string]any{"text": secret, "urgent": true})
	var sent struct{ ID string }
	if json.Unmarshal(b, &sent); code/100 != 2 || sent.ID == "" {
		t.Fatalf("send: %d %s", code, b)
	}
	check.Eventually(t, 30*time.Second, "Ben holds the message", func() bool {
		_, b, _ := api(t, ben, "GET", "/api/v1/conversations/"+created.ID+"/messages", nil)
		return bytes.Contains(b, []byte(sent.ID))
	})
	for _, level := range []string{"read", "acknowledged"} {
		if code, b, _ := api(t, ben, "POST", "/api/v1/conversations/"+created.ID+"/receipts",
			map[string]any{"level": level, "messages": []string{sent.ID}}); code != 200 {
			t.Fatalf("%s: %d %s", level, code, b)
		}
	}
	check.Eventually(t, 30*time.Second, "Amira sees the acknowledgement", func() bool {
		_, b, _ := api(t, amira, "GET", "/api/v1/conversations/"+created.ID+"/messages", nil)
		return bytes.Contains(b, []byte(`"state":"acknowledged"`))
	})
	// Ben's lock screen: a wrong passphrase, then (after the back-off) the right one, then lock.
	if code, b, _ := api(t, ben, "POST", "/app/unlock", map[string]string{"passphrase": "not-it"}); code != http.StatusUnauthorized {
		t.Fatalf("wrong passphrase: %d %s", code, b)
	}
	var session []*http.Cookie
	check.Eventually(t, 20*time.Second, "unlock after the back-off", func() bool {
		code, _, c := api(t, ben, "POST", "/app/unlock", map[string]string{"passphrase": "device-secret"})
		session = c
		return code == 200
	})
	if code, b, _ := api(t, ben, "POST", "/app/lock", nil, session...); code != 200 {
		t.Fatalf("lock: %d %s", code, b)
	}

	want := map[*running][]audit.Kind{
		amira: {audit.Created, audit.Sent, audit.Acknowledged},
		ben:   {audit.Received, audit.Read, audit.Acknowledged, audit.UnlockFailed, audit.Unlocked, audit.Locked},
	}
	for _, d := range devs {
		if err := d.d.Audit().Flush(ctx); err != nil {
			t.Fatal(err)
		}
		code, b, _ := api(t, d, "GET", "/api/v1/audit?limit=1000", nil)
		var evs []struct {
			Seq  uint64
			Kind audit.Kind
			IDs  audit.IDs
			Hash string
			Prev string
		}
		if err := json.Unmarshal(b, &evs); code != 200 || err != nil {
			t.Fatalf("audit API: %d %s", code, b)
		}
		var kinds []audit.Kind
		for _, ev := range evs {
			kinds = append(kinds, ev.Kind)
			if ev.IDs.Conversation != "" && ev.IDs.Conversation != created.ID {
				t.Errorf("event %d names conversation %s", ev.Seq, ev.IDs.Conversation)
			}
		}
		for _, k := range want[d] {
			if !slices.Contains(kinds, k) {
				t.Errorf("%s: no %s event in %v", d.dir, k, kinds)
			}
		}
		if bytes.Contains(b, []byte(secret)) || bytes.Contains(b, []byte(title)) || bytes.Contains(b, []byte("device-secret")) {
			t.Fatalf("audit API of %s shows content: %s", d.dir, b)
		}
		var st struct{ Audit audit.Stats }
		_, b, _ = api(t, d, "GET", "/api/v1/status", nil)
		if json.Unmarshal(b, &st); st.Audit.Entries < uint64(len(want[d])) || st.Audit.Dropped+st.Audit.Failed != 0 {
			t.Fatalf("status of %s: %s", d.dir, b)
		}
	}
	for _, d := range devs {
		d.close()
	}

	for _, d := range devs {
		out.Reset()
		cli(t, e, "audit", "verify", "--dir", d.dir)
		if !strings.Contains(out.String(), "entries verify") {
			t.Fatalf("verify %s: %s", d.dir, out.String())
		}
		headFile, exportFile := filepath.Join(root, filepath.Base(d.dir)+".head"), filepath.Join(root, filepath.Base(d.dir)+".jsonl")
		cli(t, e, "audit", "head", "--dir", d.dir, "--out", headFile)
		cli(t, e, "audit", "verify", "--dir", d.dir, "--head", headFile)
		cli(t, e, "audit", "export", "--dir", d.dir, "--out", exportFile)
		raw, err := os.ReadFile(exportFile)
		if err != nil {
			t.Fatal(err)
		}
		lines := bytes.Split(bytes.TrimSpace(raw), []byte("\n"))
		var kinds []audit.Kind
		t.Logf("%s: %d entries exported", filepath.Base(d.dir), len(lines))
		for i, l := range lines {
			var ln audit.Line
			if err := json.Unmarshal(l, &ln); err != nil || ln.Seq != uint64(i+1) || ln.Hash == "" || ln.Signature == "" || ln.PeerID != d.n.ID().String() {
				t.Fatalf("export line %d: %s (%v)", i, l, err)
			}
			body, _ := base64.StdEncoding.DecodeString(ln.CBOR)
			if bytes.Contains(body, []byte(secret)) || bytes.Contains(body, []byte(title)) {
				t.Fatalf("exported entry %d holds content", ln.Seq)
			}
			kinds = append(kinds, ln.Kind)
		}
		t.Logf("%s: %v", filepath.Base(d.dir), kinds)
		if bytes.Contains(raw, []byte(secret)) || bytes.Contains(raw, []byte(title)) {
			t.Fatal("export holds content")
		}
		for _, k := range want[d] {
			if !slices.Contains(kinds, k) {
				t.Errorf("export of %s: no %s in %v", d.dir, k, kinds)
			}
		}
		// --since skips what came before.
		var first audit.Line
		json.Unmarshal(lines[0], &first)
		out.Reset()
		cli(t, e, "audit", "export", "--dir", d.dir, "--since", first.Time.Format(time.RFC3339Nano))
		if n := strings.Count(out.String(), "\n"); n != len(lines)-1 {
			t.Fatalf("export --since the first event: %d lines, want %d", n, len(lines)-1)
		}
	}
	// Against another device's head, verification fails.
	root2 := newRootCmd(e)
	root2.SetArgs([]string{"audit", "verify", "--dir", ben.dir, "--head", filepath.Join(root, "amira.head")})
	if err := root2.ExecuteContext(ctx); err == nil || !strings.Contains(err.Error(), "another device") {
		t.Fatalf("verify against another device's head: %v", err)
	}
}
