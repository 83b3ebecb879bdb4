// Package pki creates and renews the cluster's certificate authorities, leaf
// certificates and service-account key. Everything is generated on first start
// and reused afterwards; leaf certificates are renewed at start when fewer than
// RenewBefore remain or when their names changed.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"slices"
	"time"
)

const (
	// CALifetime is the validity of a new certificate authority.
	CALifetime = 10 * 365 * 24 * time.Hour
	// LeafLifetime is the default validity of a new leaf certificate.
	LeafLifetime = 365 * 24 * time.Hour
)

// NeedsRenewal says whether a certificate has less than a third of its
// lifetime left (about 4 months of a year's certificate).
func NeedsRenewal(cert *x509.Certificate, now time.Time) bool {
	return cert.NotAfter.Sub(now) < cert.NotAfter.Sub(cert.NotBefore)/3
}

// Authority is a certificate authority whose key is on disk.
type Authority struct {
	Cert     *x509.Certificate
	CertPEM  []byte
	CertPath string
	// Lifetime is the validity of the leaves it signs (0: LeafLifetime).
	Lifetime time.Duration
	key      crypto.Signer
}

// LoadOrCreateCA loads the CA at certPath/keyPath, or creates a new one.
func LoadOrCreateCA(certPath, keyPath, commonName string, now time.Time) (*Authority, error) {
	cert, certPEM, err := readCert(certPath)
	if err == nil {
		key, err := readKey(keyPath)
		if err != nil {
			return nil, fmt.Errorf("CA %s: %w", commonName, err)
		}
		return &Authority{Cert: cert, CertPEM: certPEM, CertPath: certPath, key: key}, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("CA %s: %w", commonName, err)
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s@%d", commonName, now.Unix())},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("sign CA %s: %w", commonName, err)
	}
	cert, _ = x509.ParseCertificate(der)
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := WriteSecret(keyPath, keyPEM); err != nil {
		return nil, err
	}
	if err := WriteSecret(certPath, certPEM); err != nil {
		return nil, err
	}
	return &Authority{Cert: cert, CertPEM: certPEM, CertPath: certPath, key: key}, nil
}

// Leaf describes a leaf certificate.
type Leaf struct {
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []net.IP
	Client       bool // usable as a TLS client certificate
	Server       bool // usable as a TLS serving certificate
}

// EnsureLeaf makes sure certPath/keyPath hold a certificate for leaf signed by
// ca that does not need renewal yet (NeedsRenewal). It reuses the existing key. It reports
// whether a new certificate was written.
func (ca *Authority) EnsureLeaf(certPath, keyPath string, leaf Leaf, now time.Time) (bool, error) {
	key, err := readKey(keyPath)
	var keyPEM []byte
	switch {
	case errors.Is(err, os.ErrNotExist):
		key, keyPEM, err = newKey()
		if err != nil {
			return false, err
		}
	case err != nil:
		return false, fmt.Errorf("leaf %s: %w", leaf.CommonName, err)
	}
	if keyPEM == nil {
		if cert, _, err := readCert(certPath); err == nil && ca.current(cert, key, leaf, now) {
			return false, nil
		}
	}
	chain, err := ca.sign(key.Public(), leaf, now)
	if err != nil {
		return false, err
	}
	if keyPEM != nil {
		if err := WriteSecret(keyPath, keyPEM); err != nil {
			return false, err
		}
	}
	if err := WriteSecret(certPath, chain); err != nil {
		return false, err
	}
	return true, nil
}

// SignCSR signs, for leaf, the public key of a PEM certificate signing
// request: for a node that joins over the network and keeps its private key.
// The request's signature proves the sender holds the key; its subject and
// names are ignored (leaf says what the certificate holds). It returns the
// chain (leaf then CA), PEM-encoded.
func (ca *Authority) SignCSR(csrPEM []byte, leaf Leaf, now time.Time) ([]byte, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%s: not a PEM certificate request", leaf.CommonName)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", leaf.CommonName, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%s: certificate request signature: %w", leaf.CommonName, err)
	}
	return ca.sign(csr.PublicKey, leaf, now)
}

// CSR returns a PEM certificate signing request for the key at keyPath,
// creating the key (0600) when there is none. The key never leaves the file.
func CSR(keyPath, commonName string) ([]byte, error) {
	key, err := readKey(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		var keyPEM []byte
		if key, keyPEM, err = newKey(); err != nil {
			return nil, err
		}
		if err := WriteSecret(keyPath, keyPEM); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: commonName}}, key)
	if err != nil {
		return nil, fmt.Errorf("certificate request for %s: %w", keyPath, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// MatchesKey says whether the certificate at certPath holds the public key of
// the private key at keyPath.
func MatchesKey(certPath, keyPath string) error {
	cert, _, err := readCert(certPath)
	if err != nil {
		return err
	}
	key, err := readKey(keyPath)
	if err != nil {
		return err
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return fmt.Errorf("%s does not hold the public key of %s", certPath, keyPath)
	}
	return nil
}

// sign returns the PEM chain (leaf then CA, so that clients which trust only
// a bundle can verify it) of a certificate for leaf and key.
func (ca *Authority) sign(pub crypto.PublicKey, leaf Leaf, now time.Time) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: leaf.CommonName, Organization: leaf.Organization},
		NotBefore:    now.Add(-min(time.Hour, ca.lifetime()/10)), // clocks a little behind
		NotAfter:     now.Add(ca.lifetime()),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     leaf.DNSNames,
		IPAddresses:  leaf.IPs,
	}
	if leaf.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if leaf.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", leaf.CommonName, err)
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.CertPEM...), nil
}

func (ca *Authority) lifetime() time.Duration {
	if ca.Lifetime > 0 {
		return ca.Lifetime
	}
	return LeafLifetime
}

// current says whether cert is still good for leaf: signed by ca, matching key,
// same names, and not about to expire.
func (ca *Authority) current(cert *x509.Certificate, key crypto.Signer, leaf Leaf, now time.Time) bool {
	if cert.CheckSignatureFrom(ca.Cert) != nil {
		return false
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return false
	}
	if NeedsRenewal(cert, now) {
		return false
	}
	if cert.Subject.CommonName != leaf.CommonName || !slices.Equal(cert.Subject.Organization, leaf.Organization) {
		return false
	}
	if !sameSet(cert.DNSNames, leaf.DNSNames) {
		return false
	}
	var have, want []string
	for _, ip := range cert.IPAddresses {
		have = append(have, ip.String())
	}
	for _, ip := range leaf.IPs {
		want = append(want, ip.String())
	}
	return sameSet(have, want)
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// EnsureKey creates an ECDSA private key at path unless one is there, and
// returns its PEM-encoded public key.
func EnsureKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if errors.Is(err, os.ErrNotExist) {
		var keyPEM []byte
		key, keyPEM, err = newKey()
		if err != nil {
			return nil, err
		}
		if err := WriteSecret(path, keyPEM); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal public key %s: %w", path, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

func newKey() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM data", path)
	}
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return k, nil
	default:
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: unsupported key type", path)
		}
		return s, nil
	}
}

// ReadCert reads the first certificate of a PEM file.
func ReadCert(path string) (*x509.Certificate, error) {
	c, _, err := readCert(path)
	return c, err
}

func readCert(path string) (*x509.Certificate, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: no certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return cert, pem.EncodeToMemory(block), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the kernel's RNG does not fail
	}
	return n
}
