package audit

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/medmesh/medmesh/keywrap"
	"github.com/medmesh/medmesh/store"
)

const crashDirEnv = "MEDMESH_AUDIT_CRASH_DIR"

var cheapKDF = store.WithKDF(keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1})

// TestSIGKILLKeepsTheLogWhole appends from several goroutines to a log in
// a real encrypted store, in a child process killed with SIGKILL while it
// appends, three times over: every append the child saw succeed is in the
// log after the restart, and the log verifies (no half-written entry).
func TestSIGKILLKeepsTheLogWhole(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	var acked uint64
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSIGKILLKeepsTheLogWhole$")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		seen := 0
		for seen < 40 && sc.Scan() {
			seq, err := strconv.ParseUint(sc.Text(), 10, 64)
			if err != nil {
				continue // the test framework's own output
			}
			acked = max(acked, seq)
			seen++
		}
		cmd.Process.Signal(syscall.SIGKILL)
		// Acks printed before the kill landed count too.
		for sc.Scan() {
			if seq, err := strconv.ParseUint(sc.Text(), 10, 64); err == nil {
				acked = max(acked, seq)
			}
		}
		cmd.Wait()
		if seen < 40 {
			t.Fatalf("round %d: the child acknowledged only %d appends", round, seen)
		}
		st, err := store.Open(dir, []byte("pass"), cheapKDF)
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewReader(st, fixedKey(1).Public().(ed25519.PublicKey)).Verify(context.Background(), nil)
		st.Close()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if s.Entries < acked {
			t.Fatalf("round %d: %d entries, %d were acknowledged", round, s.Entries, acked)
		}
	}
}

func crashChild(dir string) {
	st, err := store.Open(dir, []byte("pass"), cheapKDF)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	l, err := Open(context.Background(), st, fixedKey(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				ev := Event{Kind: Received, IDs: IDs{Conversation: "c", Ops: []string{"o"}}}
				es, err := l.Append(context.Background(), ev, ev)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintln(w, es[1].Seq)
				w.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}
