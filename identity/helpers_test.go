package identity

import (
	"bytes"
	"encoding/pem"
	"testing"
)

func pemBody(t testing.TB, data []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatal("no PEM block")
	}
	return b.Bytes
}

func pemOf(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

// replaceSuffix swaps the trailing old bytes (a signature) of der for new,
// which must have the same length.
func replaceSuffix(der, old, new []byte) []byte {
	i := bytes.LastIndex(der, old)
	out := bytes.Clone(der)
	copy(out[i:], new)
	return out
}
