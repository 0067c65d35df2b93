package web

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/testnet"
)

// TestServeClaimsIPv6Loopback: another local user squats [::1]:PORT while
// medmesh holds 127.0.0.1:PORT — Linux allows both — and every browser
// that opens http://localhost:PORT (tried on ::1 first) gets the squatter's
// lock screen, which collects the passphrase. Serve claims [::1]:PORT too,
// and refuses to start when it is taken.
func TestServeClaimsIPv6Loopback(t *testing.T) {
	squat, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer squat.Close()
	ca := testnet.NewCA(t)
	p := testnet.Start(t, ca, ca.Enrol(t, "asha"))
	unlock := func(b []byte) bool { return string(b) == "right" }
	port := strconv.Itoa(squat.Addr().(*net.TCPAddr).Port)
	a, err := Serve(p.D, "127.0.0.1:"+port, unlock, time.Minute, testnet.Logger())
	if errors.Is(err, syscall.EADDRINUSE) {
		t.Skipf("127.0.0.1:%s is taken by something else", port)
	}
	if !errors.Is(err, ErrLoopbackTaken) {
		if err == nil {
			a.Close(time.Second)
		}
		t.Fatalf("Serve beside a squatted [::1]:%s: %v, want ErrLoopbackTaken", port, err)
	}

	a, err = Serve(p.D, "127.0.0.1:0", unlock, time.Minute, testnet.Logger())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(time.Second)
	port = strconv.Itoa(a.Addr().(*net.TCPAddr).Port)
	if l, err := net.Listen("tcp6", "[::1]:"+port); err == nil {
		l.Close()
		t.Fatalf("[::1]:%s is free for a squatter while the app runs", port)
	}
	req, _ := http.NewRequest("GET", "http://[::1]:"+port+"/api/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+a.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the app on [::1]: %d", resp.StatusCode)
	}
	if a.URL() != "http://127.0.0.1:"+port+"/" {
		t.Fatalf("URL %q", a.URL())
	}
}
