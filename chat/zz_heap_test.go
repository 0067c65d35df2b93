package chat

import (
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
)

func TestZZHeap(t *testing.T) {
	runtime.MemProfileRate = 64
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, _ := w.create(alice, "bench", bob)
	for range 5000 {
		if _, _, err := split(ra.Send(kib, SendOptions{})); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	f, _ := os.Create("/tmp/heap.prof")
	pprof.Lookup("heap").WriteTo(f, 0)
	f.Close()
	runtime.KeepAlive(ra)
}
