package testcert

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// handshake runs one TLS handshake over loopback TCP and returns the client's error.
func handshake(t *testing.T, server, client *tls.Config) error {
	l, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		_ = c.(*tls.Conn).Handshake()
		c.Close()
	}()
	c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	err = tls.Client(c, client).Handshake()
	c.Close()
	<-done
	return err
}

func TestHandshake(t *testing.T) {
	c := New(t)
	for _, tc := range []struct {
		name       string
		serverName string
		roots      *x509.CertPool
		wantErr    any
	}{
		{name: "localhost", serverName: "localhost", roots: c.Pool},
		{name: "ipv4", serverName: "127.0.0.1", roots: c.Pool},
		{name: "ipv6", serverName: "::1", roots: c.Pool},
		{name: "other name", serverName: "example.com", roots: c.Pool, wantErr: x509.HostnameError{}},
		{name: "untrusted", serverName: "localhost", roots: x509.NewCertPool(), wantErr: x509.UnknownAuthorityError{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := c.ClientTLS()
			cfg.ServerName = tc.serverName
			cfg.RootCAs = tc.roots
			err := handshake(t, c.ServerTLS(), cfg)
			switch want := tc.wantErr.(type) {
			case nil:
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
			case x509.HostnameError:
				if !errors.As(err, &want) {
					t.Fatalf("handshake error = %v, want a HostnameError", err)
				}
			case x509.UnknownAuthorityError:
				if !errors.As(err, &want) {
					t.Fatalf("handshake error = %v, want an UnknownAuthorityError", err)
				}
			}
		})
	}
}

func TestFiles(t *testing.T) {
	c := New(t)
	for path, want := range map[string][]byte{c.CAFile: c.CAPEM, c.CertFile: c.CertPEM, c.KeyFile: c.KeyPEM} {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the PEM in Cert", path)
		}
	}
	if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
		t.Errorf("LoadX509KeyPair: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.CAPEM) {
		t.Error("CAPEM holds no certificate")
	}
	leaf, err := x509.ParseCertificate(c.Leaf.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Errorf("leaf does not verify against CAPEM: %v", err)
	}
}
