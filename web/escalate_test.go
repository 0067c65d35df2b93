package web

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/internal/testnet"
)

// aheadClock is the real time plus an offset the test moves forward: the
// devices' clock, so deadlines pass without waiting for them.
type aheadClock struct{ off atomic.Int64 }

func (c *aheadClock) Now() time.Time      { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *aheadClock) Add(d time.Duration) { c.off.Add(int64(d)) }

// escalationWard: asha (admin, sender), bola (member) and chidi (outside
// the conversation), all on one clock, asha's API with opts.
func escalationWard(t *testing.T, opts ...Option) (*aheadClock, *dev, *dev, *dev, chat.ConversationID) {
	t.Helper()
	clock := &aheadClock{}
	ca := testnet.NewCA(t)
	a := serve(t, testnet.Start(t, ca, ca.Enrol(t, "asha"), device.WithClock(clock.Now)), opts...)
	b := serve(t, testnet.Start(t, ca, ca.Enrol(t, "bola"), testnet.Boot(a.Peer), device.WithClock(clock.Now)))
	c := serve(t, testnet.Start(t, ca, ca.Enrol(t, "chidi"), testnet.Boot(a.Peer), device.WithClock(clock.Now)))
	testnet.Knows(t, a.Peer, b.Peer, c.Peer)
	w := &ward{ca: ca, asha: a, staff: []*dev{b, c}}
	return clock, a, b, c, w.create(t, "Ward 7", b)
}

// TestEscalationAPI: ack_within bounds; an urgent message's deadline and
// escalation state; the sender asked to choose on the event stream; who
// may escalate through the API; the escalated-to colleague reading it,
// alerted on its stream, acknowledging it; the sender seeing it.
func TestEscalationAPI(t *testing.T) {
	clock, a, b, c, id := escalationWard(t)
	for _, body := range []string{
		`{"text":"x","urgent":true,"ack_within":10}`,
		`{"text":"x","urgent":true,"ack_within":90000}`,
		`{"text":"x","urgent":true,"ack_within":-5}`,
		`{"text":"x","ack_within":60}`,
	} {
		a.must(t, http.StatusBadRequest, "POST", convPath(id)+"/messages", body)
	}
	events := dialEvents(t, a)
	cEvents := dialEvents(t, c)
	msg := post(t, a, id, `{"text":"bed 4 desaturating","urgent":true,"ack_within":30}`)
	m := a.message(t, id, msg)
	esc, _ := m["escalation"].(map[string]any)
	if m["ack_within"] != float64(30) || m["deadline"] == nil || esc["state"] != conversations.EscalationWaiting {
		t.Fatalf("urgent message: %v", m)
	}
	path := convPath(id) + "/messages/" + msg + "/escalate"
	a.must(t, http.StatusConflict, "POST", path, `{"to":"chidi"}`) // before the deadline
	waitMessage(t, b, id, msg, "bola has it", func(apiMessage) bool { return true })

	clock.Add(31*time.Second + conversations.EscalateAfter)
	a.C.CheckEscalations()
	awaitEvent(t, events, "re-alert", func(e apiEvent) bool { return e.Type == "realert" && len(e.Ops) > 0 && e.Ops[0] == msg })
	awaitEvent(t, events, "choose", func(e apiEvent) bool { return e.Type == "choose" && len(e.Ops) > 0 && e.Ops[0] == msg })
	waitMessage(t, a, id, msg, "state choose", func(m apiMessage) bool {
		e, _ := m["escalation"].(map[string]any)
		return e["state"] == conversations.EscalationChoose
	})

	// A plain member may not escalate another's message; nobody escalates
	// to someone unknown, or with a malformed request.
	b.must(t, http.StatusForbidden, "POST", path, `{"to":"chidi"}`)
	a.must(t, http.StatusUnprocessableEntity, "POST", path, `{"to":"nobody-here"}`)
	a.must(t, http.StatusBadRequest, "POST", path, `{"to":[]}`)
	a.must(t, http.StatusBadRequest, "POST", convPath(id)+"/messages/zz/escalate", `{"to":"chidi"}`)

	// Nor does a request without the token (a page on another origin, a
	// process on the LAN).
	resp, err := http.Post(a.srv.URL+path, "application/json", strings.NewReader(`{"to":"chidi"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
		t.Fatalf("escalate without a token: %d", resp.StatusCode)
	}

	a.must(t, http.StatusCreated, "POST", path, `{"to":"chidi"}`)
	m = waitMessage(t, a, id, msg, "escalated to chidi", func(m apiMessage) bool {
		e, _ := m["escalation"].(map[string]any)
		to, _ := e["to"].([]any)
		return e["state"] == conversations.EscalationEscalated && len(to) == 1 && to[0] == c.ID.String()
	})
	if e := m["escalation"].(map[string]any); e["step"] != float64(1) || e["by"] != a.ID.String() {
		t.Fatalf("escalation %v", e)
	}
	a.must(t, http.StatusConflict, "POST", path, `{"to":"chidi"}`) // step 2 before its deadline

	testnet.Eventually(t, within, "chidi lists the conversation", func() bool { return c.listed(t, id) != nil })
	cm := waitMessage(t, c, id, msg, "chidi reads it", func(m apiMessage) bool { return m["text"] == "bed 4 desaturating" })
	if cm["quoted_by"] != a.ID.String() {
		t.Fatalf("chidi's copy: %v", cm)
	}
	awaitEvent(t, cEvents, "chidi alerted", func(e apiEvent) bool { return e.Type == "escalated" && len(e.Ops) > 0 && e.Ops[0] == msg })
	c.must(t, http.StatusOK, "POST", convPath(id)+"/receipts", `{"level":"acknowledged","messages":["`+msg+`"]}`)
	waitMessage(t, a, id, msg, "acknowledged", func(m apiMessage) bool {
		e, _ := m["escalation"].(map[string]any)
		return e["state"] == conversations.EscalationAcknowledged
	})
}

// TestEscalationInBrowser: the sender's app shows "Escalated to …" under
// the message, and a red banner when the node re-alerts.
func TestEscalationInBrowser(t *testing.T) {
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		if requireAll() {
			t.Fatal("chromium is missing and MEDMESH_REQUIRE_ALL=1")
		}
		t.Skip("chromium not installed")
	}
	clock, a, _, c, id := escalationWard(t, WithApp(func(p []byte) bool { return string(p) == "device-secret" }, time.Hour))
	msg := post(t, a, id, `{"text":"bed 4 desaturating","urgent":true,"ack_within":30}`)
	clock.Add(31 * time.Second)
	a.must(t, http.StatusCreated, "POST", convPath(id)+"/messages/"+msg+"/escalate", `{"to":"chidi"}`)
	testnet.Eventually(t, within, "chidi is a member", func() bool { return testnet.Joined(c.Peer, id, 3) })

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(390, 844))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(acancel)
	tab, c1 := chromedp.NewContext(actx)
	t.Cleanup(c1)
	tab, c2 := context.WithTimeout(tab, 60*time.Second)
	t.Cleanup(c2)
	step := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(tab, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	step("unlock",
		chromedp.Navigate(a.srv.URL),
		chromedp.WaitVisible(chromedp.CSS("#pass")),
		chromedp.SendKeys(chromedp.CSS("#pass"), "device-secret"),
		chromedp.Click(chromedp.CSS("#unlock-form button")),
		chromedp.WaitVisible(chromedp.CSS("#list-view")))
	step("open the chat",
		chromedp.WaitVisible(chromedp.CSS("#conversations li button")),
		chromedp.Click(chromedp.CSS("#conversations li button")))
	step("the message says whom it was escalated to",
		chromedp.WaitVisible(chromedp.Search(`//li[contains(@class,"urgent")]//div[contains(@class,"esc")]/span[starts-with(., "Escalated to ")][contains(., "chidi")]`)))

	// A second urgent message goes past its deadline: the banner re-alerts.
	late := post(t, a, id, `{"text":"bed 9 BP 70/40","urgent":true,"ack_within":30}`)
	clock.Add(31 * time.Second)
	a.C.CheckEscalations()
	step("the re-alert banner",
		chromedp.WaitVisible(chromedp.Search(`//div[@id="escalation-banner"][@role="alert"]/span[.="Urgent message not acknowledged in time"]`)))
	_ = late

	// Sending urgent from the app, acknowledgement wanted within a minute.
	step("tick urgent", chromedp.Click(chromedp.CSS("#urgent")), chromedp.WaitVisible(chromedp.CSS("#ack-within")))
	if _, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.getElementById('ack-within').value = '60'`)); err != nil {
		t.Fatal(err)
	}
	step("send", chromedp.SendKeys(chromedp.CSS("#text"), "bed 12 chest pain"), chromedp.Click(chromedp.CSS(`#send-form button[type="submit"]`)))
	testnet.Eventually(t, within, "the app's urgent message asks for an acknowledgement within 60 s", func() bool {
		for _, m := range a.messages(t, id) {
			if m["text"] == "bed 12 chest pain" {
				return m["urgent"] == true && m["ack_within"] == float64(60)
			}
		}
		return false
	})
	if b, err := chromedp.Run(tab, chromedp.FullScreenshot(100)); err == nil {
		os.MkdirAll("testdata/out", 0o755)
		p, _ := filepath.Abs(filepath.Join("testdata/out", "escalated.png"))
		os.WriteFile(p, b, 0o644)
		t.Logf("screenshot: %s", p)
	}
	body, err := chromedp.Run(tab, chromedp.TextContent(chromedp.CSS("#messages")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, "Escalated to") {
		t.Fatalf("messages: %q", body)
	}
}
