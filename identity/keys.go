package identity

import (
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/pem"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/keywrap"
)

// KEMID is the HPKE KEM of device keys: MLKEM768-X25519, a hybrid
// post-quantum KEM.
const KEMID uint16 = 0x647a

// PEM block types of the encrypted key files.
const (
	pemDeviceKey = "MEDMESH DEVICE KEY"
	pemCAKey     = "MEDMESH CA KEY"
)

// DeviceKey is a device's private keys: the Ed25519 identity (its libp2p
// identity) and the KEM key for group key delivery.
type DeviceKey struct {
	Identity ed25519.PrivateKey
	KEM      hpke.PrivateKey
}

// GenerateDeviceKey makes fresh device keys.
func GenerateDeviceKey() (*DeviceKey, error) {
	_, id, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	kem, err := hpke.MLKEM768X25519().GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("generate KEM key: %w", err)
	}
	return &DeviceKey{Identity: id, KEM: kem}, nil
}

// PeerID is the libp2p peer ID of the identity key.
func (k *DeviceKey) PeerID() peer.ID {
	id, err := PeerIDFromKey(k.Identity.Public().(ed25519.PublicKey))
	if err != nil {
		panic(err) // an ed25519.PrivateKey always has a valid public half
	}
	return id
}

// KEMPublic is the serialised KEM public key, as it goes into certificates.
func (k *DeviceKey) KEMPublic() []byte { return k.KEM.PublicKey().Bytes() }

// PeerIDFromKey derives a libp2p peer ID from an Ed25519 public key.
func PeerIDFromKey(pub ed25519.PublicKey) (peer.ID, error) {
	pk, err := crypto.UnmarshalEd25519PublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: identity key: %v", ErrMalformed, err)
	}
	return peer.IDFromPublicKey(pk)
}

type deviceKeyFile struct {
	Seed  []byte `cbor:"1,keyasint"`
	KEMID uint16 `cbor:"2,keyasint"`
	KEM   []byte `cbor:"3,keyasint"`
}

// Marshal seals the keys under passphrase into the PEM of DEV/device.key.
func (k *DeviceKey) Marshal(passphrase []byte, p keywrap.Params) ([]byte, error) {
	kem, err := k.KEM.Bytes()
	if err != nil {
		return nil, fmt.Errorf("serialise KEM key: %w", err)
	}
	plain, err := detcbor.Marshal(deviceKeyFile{Seed: k.Identity.Seed(), KEMID: KEMID, KEM: kem})
	if err != nil {
		return nil, err
	}
	return sealPEM(pemDeviceKey, plain, passphrase, p)
}

// ParseDeviceKey opens the PEM of DEV/device.key.
func ParseDeviceKey(data, passphrase []byte) (*DeviceKey, error) {
	plain, err := openPEM(pemDeviceKey, data, passphrase)
	if err != nil {
		return nil, err
	}
	var f deviceKeyFile
	if err := detcbor.Unmarshal(plain, &f, 8192); err != nil {
		return nil, fmt.Errorf("device key: %w: %v", ErrMalformed, err)
	}
	if len(f.Seed) != ed25519.SeedSize || f.KEMID != KEMID {
		return nil, fmt.Errorf("device key: %w: unexpected key sizes or KEM", ErrMalformed)
	}
	kem, err := hpke.MLKEM768X25519().NewPrivateKey(f.KEM)
	if err != nil {
		return nil, fmt.Errorf("device key: %w: KEM key: %v", ErrMalformed, err)
	}
	return &DeviceKey{Identity: ed25519.NewKeyFromSeed(f.Seed), KEM: kem}, nil
}

func marshalCAKey(k ed25519.PrivateKey, passphrase []byte, p keywrap.Params) ([]byte, error) {
	return sealPEM(pemCAKey, k.Seed(), passphrase, p)
}

func parseCAKey(data, passphrase []byte) (ed25519.PrivateKey, error) {
	seed, err := openPEM(pemCAKey, data, passphrase)
	if err != nil {
		return nil, err
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("CA key: %w: seed size", ErrMalformed)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

func sealPEM(kind string, plain, passphrase []byte, p keywrap.Params) ([]byte, error) {
	box, err := keywrap.Seal(passphrase, plain, kind, p)
	if err != nil {
		return nil, fmt.Errorf("seal %s: %w", kind, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: box}), nil
}

func openPEM(kind string, data, passphrase []byte) ([]byte, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != kind {
		return nil, fmt.Errorf("%w: not a %s PEM file", ErrMalformed, kind)
	}
	plain, err := keywrap.Open(passphrase, b.Bytes, kind)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", kind, err)
	}
	return plain, nil
}
