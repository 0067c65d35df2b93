package fifo

import "testing"

// TestOldestForgotten: a full map forgets the key put longest ago, never
// holds more than its limit, and a key put again keeps its place.
func TestOldestForgotten(t *testing.T) {
	f := New[int, string](3)
	f.Put(1, "a")
	f.Put(2, "b")
	f.Put(3, "c")
	f.Put(1, "A") // held: value replaced, place kept
	if v, ok := f.Get(1); !ok || v != "A" {
		t.Fatalf("Get(1) = %q, %v", v, ok)
	}
	f.Put(4, "d") // forgets 1, the oldest
	if _, ok := f.Get(1); ok {
		t.Fatal("the oldest key was kept")
	}
	for k := 2; k <= 4; k++ {
		if _, ok := f.Get(k); !ok {
			t.Fatalf("key %d forgotten", k)
		}
	}
	for k := 5; k < 100; k++ {
		f.Put(k, "x")
		if f.Len() > 3 {
			t.Fatalf("%d keys held, limit 3", f.Len())
		}
	}
	if _, ok := f.Get(99); !ok {
		t.Fatal("the newest key forgotten")
	}
	if _, ok := f.Get(96); ok {
		t.Fatal("key 96 kept after three newer")
	}
}
