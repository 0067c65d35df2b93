package mesh

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestInflightClaims: two sessions needing the same ops fetch each once —
// the second leaves to the first what it is fetching and counts it — and
// once the first is done, a later claim takes what is still not held.
func TestInflightClaims(t *testing.T) {
	var f inflight
	tag := []byte("0123456789abcdef")
	need := randomIDs(rand.New(rand.NewPCG(5, 5)), 10)
	first, others, release1 := f.claim(tag, need, nil)
	if len(first) != 10 || others != 0 {
		t.Fatalf("first claim took %d, left %d", len(first), others)
	}
	second, others, release2 := f.claim(tag, need, nil)
	if len(second) != 0 || others != 10 {
		t.Fatalf("second claim took %d, left %d to the first", len(second), others)
	}
	release2()
	if got, _, release := f.claim(tag, need, nil); len(got) != 0 {
		release()
		t.Fatalf("a release of nothing freed %d", len(got))
	} else {
		release()
	}
	release1() // applied 4 of them
	third, others, release3 := f.claim(tag, need, need[:4])
	defer release3()
	if !slices.Equal(third, need[4:]) || others != 0 {
		t.Fatalf("after the first: took %d, left %d; want the 6 not held", len(third), others)
	}
	other, _, release4 := f.claim([]byte("fedcba9876543210"), need, nil)
	defer release4()
	if len(other) != 10 {
		t.Fatalf("another tag's claim took %d", len(other))
	}
}
