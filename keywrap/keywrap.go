// Package keywrap seals small secrets (private keys, data keys) under a
// passphrase: argon2id derives a key-encryption key, XChaCha20-Poly1305 seals
// the secret with a caller-chosen label as associated data, so a sealed CA key
// cannot be passed off as a device key. The sealed form is deterministic CBOR
// carrying the argon2id parameters, bounded on decode so a hostile file cannot
// make us allocate gigabytes. No I/O, no logging; secrets never enter errors.
package keywrap

import (
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"

	"github.com/medmesh/medmesh/internal/detcbor"
	"golang.org/x/crypto/chacha20poly1305"
)

// Errors returned by Open.
var (
	// ErrWrongPassphrase means authentication failed: the passphrase is wrong
	// or the sealed bytes were altered. The two cannot be told apart.
	ErrWrongPassphrase = errors.New("wrong passphrase (or the key file was altered)")
	// ErrMalformed means the bytes are not a sealed secret of this format.
	ErrMalformed = errors.New("malformed sealed key")
	// ErrEmptyPassphrase is returned when sealing or opening with no passphrase.
	ErrEmptyPassphrase = errors.New("empty passphrase")
)

// Params are the argon2id cost parameters.
type Params struct {
	Time      uint32 // passes
	MemoryKiB uint32
	Threads   uint8
}

// DefaultParams cost about 0.1 s and 64 MiB on the reference machine.
var DefaultParams = Params{Time: 2, MemoryKiB: 64 * 1024, Threads: 2}

// Limits accepted on Open; beyond them a file is refused as malformed.
const (
	maxTime      = 16
	maxMemoryKiB = 1024 * 1024 // 1 GiB
	maxThreads   = 16
	maxSealed    = 64 * 1024
	saltLen      = 16
	version      = 1
)

type sealed struct {
	Version   uint8  `cbor:"1,keyasint"`
	Time      uint32 `cbor:"2,keyasint"`
	MemoryKiB uint32 `cbor:"3,keyasint"`
	Threads   uint8  `cbor:"4,keyasint"`
	Salt      []byte `cbor:"5,keyasint"`
	Nonce     []byte `cbor:"6,keyasint"`
	Box       []byte `cbor:"7,keyasint"`
}

// Seal encrypts secret under passphrase with the given parameters. label is
// bound as associated data and must be given again to Open.
func Seal(passphrase, secret []byte, label string, p Params) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, ErrEmptyPassphrase
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	s := sealed{Version: version, Time: p.Time, MemoryKiB: p.MemoryKiB, Threads: p.Threads,
		Salt: make([]byte, saltLen), Nonce: make([]byte, chacha20poly1305.NonceSizeX)}
	rand.Read(s.Salt)
	rand.Read(s.Nonce)
	aead, err := chacha20poly1305.NewX(s.kek(passphrase))
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	s.Box = aead.Seal(nil, s.Nonce, secret, s.aad(label))
	return detcbor.Marshal(s)
}

// Open decrypts what Seal produced.
func Open(passphrase, data []byte, label string) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, ErrEmptyPassphrase
	}
	s, err := decode(data)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(s.kek(passphrase))
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	secret, err := aead.Open(nil, s.Nonce, s.Box, s.aad(label))
	if err != nil {
		return nil, ErrWrongPassphrase
	}
	return secret, nil
}

func decode(data []byte) (*sealed, error) {
	var s sealed
	if err := detcbor.Unmarshal(data, &s, maxSealed); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if s.Version != version {
		return nil, fmt.Errorf("%w: version %d", ErrMalformed, s.Version)
	}
	if err := (Params{s.Time, s.MemoryKiB, s.Threads}).check(); err != nil {
		return nil, err
	}
	if len(s.Salt) != saltLen || len(s.Nonce) != chacha20poly1305.NonceSizeX || len(s.Box) < chacha20poly1305.Overhead {
		return nil, fmt.Errorf("%w: field lengths", ErrMalformed)
	}
	return &s, nil
}

func (p Params) check() error {
	if p.Time < 1 || p.Time > maxTime || p.MemoryKiB < 8 || p.MemoryKiB > maxMemoryKiB || p.Threads < 1 || p.Threads > maxThreads {
		return fmt.Errorf("%w: argon2id parameters out of range", ErrMalformed)
	}
	return nil
}

func (s *sealed) kek(passphrase []byte) []byte {
	return argon2.IDKey(passphrase, s.Salt, s.Time, s.MemoryKiB, s.Threads, chacha20poly1305.KeySize)
}

// aad binds the label and every parameter, so none can be changed unnoticed.
func (s *sealed) aad(label string) []byte {
	return fmt.Appendf(nil, "medmesh keywrap v%d|%s|%d|%d|%d", s.Version, label, s.Time, s.MemoryKiB, s.Threads)
}
