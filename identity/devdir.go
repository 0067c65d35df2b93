package identity

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/medmesh/medmesh/internal/atomicfile"
	"github.com/medmesh/medmesh/keywrap"
)

// File names in a device directory (DESIGN.md, Files).
const (
	DeviceKeyFile  = "device.key" // identity + KEM keys, sealed under the device passphrase
	DeviceCSRFile  = "device.csr"
	DeviceCertFile = "device.crt" // PEM chain, device first
	TrustFile      = "ca.crt"     // trust roots; several for federated trusts
	APITokenFile   = "api.token"  // the local API's bearer token (medmesh run)
	// RevokedFile marks a device directory whose keys were destroyed
	// because the device's own certificate was revoked; it holds no secret.
	RevokedFile = "revoked"
)

// InitDevice makes device keys in dir, copies the trust roots (PEM) there and
// writes a CSR for the staff details. It never replaces existing keys.
func InitDevice(dir string, d Details, rootsPEM, passphrase []byte, p keywrap.Params) (*DeviceKey, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	roots, err := ParseCertificates(rootsPEM)
	if err != nil {
		return nil, fmt.Errorf("trust roots: %w", err)
	}
	if _, err := NewTrust(roots); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create device directory: %w", err)
	}
	keyPath := filepath.Join(dir, DeviceKeyFile)
	if _, err := os.Stat(keyPath); err == nil {
		return nil, fmt.Errorf("device keys in %s: %w (use renew for a new CSR)", dir, ErrExists)
	}
	k, err := GenerateDeviceKey()
	if err != nil {
		return nil, err
	}
	csr, err := CreateCSR(k, d)
	if err != nil {
		return nil, err
	}
	sealed, err := k.Marshal(passphrase, p)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.CreateExclusive(keyPath, sealed, 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, TrustFile), EncodeCertificates(roots...), 0o644); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, DeviceCSRFile), csr, 0o644); err != nil {
		return nil, err
	}
	return k, nil
}

// LoadDeviceKey unseals DEV/device.key.
func LoadDeviceKey(dir string, passphrase []byte) (*DeviceKey, error) {
	raw, err := os.ReadFile(filepath.Join(dir, DeviceKeyFile))
	if err != nil {
		return nil, fmt.Errorf("read device key: %w", err)
	}
	k, err := ParseDeviceKey(raw, passphrase)
	if err != nil {
		return nil, fmt.Errorf("device key in %s: %w", dir, err)
	}
	return k, nil
}

// LoadTrust reads DEV/ca.crt (one or more roots).
func LoadTrust(path string) (*Trust, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read trust roots: %w", err)
	}
	roots, err := ParseCertificates(raw)
	if err != nil {
		return nil, fmt.Errorf("trust roots %s: %w", path, err)
	}
	return NewTrust(roots)
}

// Renew writes a fresh CSR in dir from the existing keys, with the staff
// details of the current certificate (or of the previous CSR if none was
// issued yet).
func Renew(dir string, passphrase []byte) (*DeviceKey, error) {
	k, err := LoadDeviceKey(dir, passphrase)
	if err != nil {
		return nil, err
	}
	d, err := currentDetails(dir)
	if err != nil {
		return nil, err
	}
	csr, err := CreateCSR(k, d)
	if err != nil {
		return nil, err
	}
	return k, atomicfile.WriteFile(filepath.Join(dir, DeviceCSRFile), csr, 0o644)
}

func currentDetails(dir string) (Details, error) {
	raw, err := os.ReadFile(filepath.Join(dir, DeviceCertFile))
	if err == nil {
		certs, err := ParseCertificates(raw)
		if err != nil {
			return Details{}, fmt.Errorf("device certificate: %w", err)
		}
		s, err := StaffFromCert(certs[0])
		if err != nil {
			return Details{}, fmt.Errorf("device certificate: %w", err)
		}
		return Details{Name: s.Name, StaffID: s.StaffID, Department: s.Department, Site: s.Site, Registration: s.Registration}, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return Details{}, fmt.Errorf("read device certificate: %w", err)
	}
	raw, err = os.ReadFile(filepath.Join(dir, DeviceCSRFile))
	if err != nil {
		return Details{}, fmt.Errorf("no device certificate or CSR to renew from: %w", err)
	}
	r, err := ParseCSR(raw)
	if err != nil {
		return Details{}, err
	}
	return r.Details, nil
}
