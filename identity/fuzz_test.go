package identity

import (
	"crypto/x509"
	"math/big"
	"testing"
)

func FuzzParseCertificates(f *testing.F) {
	root, _ := NewRootCA("T", t0)
	d := enrol(f, root, alice, SignOptions{Roles: []string{"doctor"}}, t0)
	f.Add(EncodeCertificates(d.chain...))
	f.Add(d.chain[0].Raw)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	tr, _ := NewTrust([]*x509.Certificate{root.Cert})
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertificates(data)
		if err != nil {
			return
		}
		_, _ = StaffFromCert(certs[0])
		id := d.key.PeerID()
		if s, err := tr.Admit(certs, id, t0); err == nil && s.PeerID != id {
			t.Fatal("admitted with a different peer ID")
		}
	})
}

func FuzzParseCSR(f *testing.F) {
	k, _ := GenerateDeviceKey()
	csr, _ := CreateCSR(k, alice)
	f.Add(csr)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseCSR(data)
		if err == nil && (r.Name == "" || r.StaffID == "" || r.KEMKey == nil) {
			t.Fatal("accepted a CSR without staff details")
		}
	})
}

func FuzzParseCRL(f *testing.F) {
	root, _ := NewRootCA("T", t0)
	der, _ := root.CreateCRL(big.NewInt(3), nil, t0)
	f.Add(EncodeCRL(der))
	f.Add(der)
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseCRL(data)
		if err != nil {
			return
		}
		tr, _ := NewTrust([]*x509.Certificate{root.Cert})
		if ok, err := tr.UpdateCRL(l); ok && err == nil && l.CheckSignatureFrom(root.Cert) != nil {
			t.Fatal("installed a CRL that does not verify")
		}
	})
}

func FuzzParseDeviceKey(f *testing.F) {
	k, _ := GenerateDeviceKey()
	raw, _ := k.Marshal([]byte("pass"), fastKDF)
	f.Add(raw)
	f.Add([]byte("-----BEGIN MEDMESH DEVICE KEY-----\noA==\n-----END MEDMESH DEVICE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = ParseDeviceKey(data, []byte("pass"))
	})
}
