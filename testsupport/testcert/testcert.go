// Package testcert generates a throw-away certificate authority and a server certificate for
// tests: ECDSA P-256, valid for "localhost", 127.0.0.1 and ::1, written as PEM files.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Names are the DNS names and IP addresses every generated leaf certificate is valid for.
var Names = []string{"localhost", "127.0.0.1", "::1"}

// Cert is a CA and a leaf certificate signed by it, with their PEM files on disk.
type Cert struct {
	// CAFile, CertFile and KeyFile are the paths of the PEM files: the CA certificate, the
	// leaf certificate and the leaf's private key (PKCS #8).
	CAFile, CertFile, KeyFile string
	// CAPEM, CertPEM and KeyPEM are the contents of those files.
	CAPEM, CertPEM, KeyPEM []byte
	// Pool holds the CA certificate only: what a client that trusts this CA verifies against.
	Pool *x509.CertPool
	// Leaf is the server certificate and key, ready for a tls.Config.
	Leaf tls.Certificate
}

// ServerTLS returns a new TLS configuration for a test server presenting the leaf certificate.
func (c *Cert) ServerTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.Leaf}, MinVersion: tls.VersionTLS12}
}

// ClientTLS returns a new TLS configuration for a client that trusts only this CA and verifies
// the name "localhost".
func (c *Cert) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: c.Pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// New generates a CA and a leaf certificate and writes ca.pem, cert.pem and key.pem into a
// fresh t.TempDir(). It fails the test on any error.
func New(t testing.TB) *Cert {
	t.Helper()
	c, err := Generate(t.TempDir())
	if err != nil {
		t.Fatalf("testcert: %v", err)
	}
	return c
}

// Generate generates a CA and a leaf certificate and writes ca.pem, cert.pem and key.pem into
// dir, which must exist.
func Generate(dir string) (*Cert, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "smtpout test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range Names {
		if ip := net.ParseIP(n); ip != nil {
			leafTmpl.IPAddresses = append(leafTmpl.IPAddresses, ip)
		} else {
			leafTmpl.DNSNames = append(leafTmpl.DNSNames, n)
		}
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return nil, err
	}

	c := &Cert{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "cert.pem"),
		KeyFile:  filepath.Join(dir, "key.pem"),
		CAPEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		Pool:     x509.NewCertPool(),
	}
	c.Pool.AddCert(caCert)
	if c.Leaf, err = tls.X509KeyPair(c.CertPEM, c.KeyPEM); err != nil {
		return nil, err
	}
	for path, data := range map[string][]byte{c.CAFile: c.CAPEM, c.CertFile: c.CertPEM, c.KeyFile: c.KeyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return c, nil
}
