// Package identity is the trust layer of medmesh: the trust's certificate
// authority (root and per-site issuing CAs), device keys, PKCS#10 enrolment
// requests, device certificates, revocation lists, and the one admission
// check every other layer calls before it talks to a peer.
//
// Everything is standard X.509 (crypto/x509), so a trust's PKI tools
// (`openssl x509 -text`, `openssl crl -text`) read every file we write.
//
// A device certificate binds:
//   - the device's Ed25519 identity key, which is its libp2p identity: the
//     peer ID is derived from the certificate's public key;
//   - a staff member, in the subject: CN = name, serialNumber (2.5.4.5) =
//     staff ID, OU = department, L = site, O = trust;
//   - medmesh extensions, all non-critical so other tools still parse them.
//
// The medmesh OIDs sit in the IANA experimental arc 1.3.6.1.3 until the
// project registers a Private Enterprise Number; changing them is a breaking
// change of the certificate format:
//
//	1.3.6.1.3.7626.1.1  roles         SEQUENCE OF UTF8String
//	1.3.6.1.3.7626.1.2  KEM key       SEQUENCE { kem INTEGER, key OCTET STRING }
//	                                  (HPKE KEM identifier and its serialised
//	                                  public key; MLKEM768-X25519 = 0x647a)
//	1.3.6.1.3.7626.1.3  registration  UTF8String (professional registration)
//	1.3.6.1.3.7626.1.4  staff cert    INTEGER: marks an admission credential
//	                                  and names the serial of the staff
//	                                  certificate it was issued with
//
// With every device certificate the CA issues an admission credential
// (CA.SignCredential): the same key, KEM key, roles and validity, its own
// serial, the subject "CN=medmesh admission" and no staff details. Devices
// present it to unadmitted peers (Trust.AdmitCredential) and show the staff
// certificate only to peers they have admitted. A CRL entry for the staff
// certificate's serial revokes the credential too. device.crt holds both
// (CA.Bundle, SplitBundle): the chain, device first, then the credential.
//
// CAs and their CRLs are indexed by the SHA-256 of their public key
// (CAKey), never by the SubjectKeyId a CA chooses: a root of another trust
// claiming our root's key ID cannot displace it or its CRLs.
//
// The CSR carries the KEM key and registration in an extensionRequest
// attribute; the CA copies them, adds the roles it grants and the trust name.
//
// Federation (federation.go): a root CA of ours signs a record naming
// another trust's root and a policy (roles, departments, sites; scope
// "invited"); the newest record per other root wins (the same signer's
// higher number; across our roots, the later issue time, then the higher
// number) and a withdrawal is a newer record. Only a self-signed root in
// the trust list signs records, never an issuing CA listed beside it. A
// chain verified under such a root is admitted only by
// AdmitFederatedCredential / AdmitFederated, as a federated peer — never
// by Admit/AdmitCredential, which verify under our own roots only — so a
// certificate of another trust is never our own staff, whatever it names.
// Its trust's CRLs are accepted once a record names its root; at most
// MaxFederatedIssuers of its issuing CAs are kept; its CRL numbers never
// count as ours (NewestCRLNumber).
//
// Invariants: no network I/O, no goroutines, no logging. Functions return
// values and the named errors of errors.go; secrets never appear in errors.
// Admission is decided only by Trust.Admit; a CRL replaces an older one only
// when it is signed by the CA it names and carries a higher CRL number.
package identity
