package mailer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"time"

	"github.com/wneessen/go-mail/smtp"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/oauth"
)

// ProbeExtensions are the EHLO keywords a probe looks for, in the order reports show them.
var ProbeExtensions = []string{
	"SIZE", "PIPELINING", "CHUNKING", "8BITMIME", "BINARYMIME", "SMTPUTF8",
	"ENHANCEDSTATUSCODES", "DSN", "REQUIRETLS", "STARTTLS", "AUTH",
}

// ProbeResult is what a probe learnt about the server, as far as it got: each field is set
// when its step completed, so a failed probe still shows the steps before the failure.
type ProbeResult struct {
	// Address is the host:port dialled; Remote the address connected to, after Connect.
	Address string
	Remote  string
	Connect time.Duration
	// Steps lists the steps completed, in order (StepDial, StepTLS or StepSTARTTLS,
	// StepGreeting, StepEHLO, StepAUTH, StepQUIT).
	Steps []Step
	// TLS is the negotiated TLS session (implicit TLS or STARTTLS).
	TLS *tls.ConnectionState
	// Server is the server's reply to the last EHLO, without code and extensions.
	Server string
	// Extensions maps each of ProbeExtensions the server advertised in its last EHLO (after
	// STARTTLS) to its parameters ("SIZE" -> "10485760").
	Extensions map[string]string
	// AuthMechanisms are the AUTH mechanisms advertised, upper case.
	AuthMechanisms []string
	// AuthMechanism is PLAIN, LOGIN, XOAUTH2 or OAUTHBEARER when AUTH is configured, else "".
	AuthMechanism string
	// Token is the token step of XOAUTH2 and OAUTHBEARER (nil otherwise, or when it failed).
	Token *TokenStep
	// AuthRetried is true when the server refused the first token and a new one was fetched.
	AuthRetried bool
	// Authenticated is true once the server accepted the credentials.
	Authenticated bool
}

// Has reports whether the server advertised the EHLO keyword ext.
func (r *ProbeResult) Has(ext string) bool {
	_, ok := r.Extensions[strings.ToUpper(ext)]
	return ok
}

// Did reports whether step completed.
func (r *ProbeResult) Did(step Step) bool {
	for _, s := range r.Steps {
		if s == step {
			return true
		}
	}
	return false
}

// Certificate returns the server's leaf certificate, or nil before TLS.
func (r *ProbeResult) Certificate() *x509.Certificate {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil
	}
	return r.TLS.PeerCertificates[0]
}

// The hooks below are called by Mailer.open as each step completes; a nil result (sending)
// ignores them.

func (r *ProbeResult) step(s Step) {
	if r != nil {
		r.Steps = append(r.Steps, s)
	}
}

func (r *ProbeResult) connected(c net.Conn, took time.Duration) {
	if r == nil {
		return
	}
	r.Remote = c.RemoteAddr().String()
	r.Connect = took
	r.step(StepDial)
}

func (r *ProbeResult) secured(s Step, st tls.ConnectionState) {
	if r == nil {
		return
	}
	r.TLS = &st
	r.step(s)
}

func (r *ProbeResult) greeted(c *smtp.Client) {
	if r == nil {
		return
	}
	r.Server = c.HelloResponse()
	r.Extensions = make(map[string]string)
	r.AuthMechanisms = nil
	for _, ext := range ProbeExtensions {
		if ok, param := c.Extension(ext); ok {
			r.Extensions[ext] = param
		}
	}
	if mechs, ok := r.Extensions["AUTH"]; ok {
		r.AuthMechanisms = strings.Fields(strings.ToUpper(mechs))
	}
	if !r.Did(StepEHLO) {
		r.step(StepEHLO)
	}
}

func (r *ProbeResult) authenticating(mech string) {
	if r != nil {
		r.AuthMechanism = mech
	}
}

// TokenStep is what a probe learnt about the access token (never the token itself).
type TokenStep struct {
	// Endpoint is the token URL (or "file PATH").
	Endpoint string
	// Lifetime is how long the token was valid for when obtained (0: unknown); Remaining how
	// long it still is.
	Lifetime, Remaining time.Duration
	// Claims are the token's claims when it is a readable JWT (Readable).
	Claims   oauth.Claims
	Readable bool
}

func (r *ProbeResult) token(endpoint string, t oauth.Token) {
	if r == nil {
		return
	}
	ts := &TokenStep{Endpoint: endpoint, Lifetime: t.Lifetime()}
	if !t.Expiry.IsZero() {
		ts.Remaining = time.Until(t.Expiry).Round(time.Second)
	}
	ts.Claims, ts.Readable = oauth.ReadClaims(t.Value)
	r.Token = ts
	if !r.Did(StepToken) {
		r.step(StepToken)
	}
}

func (r *ProbeResult) retried() {
	if r != nil {
		r.AuthRetried = true
	}
}

// Probe opens a connection to cfg's server exactly as sending does (the same code: TCP,
// implicit TLS or mandatory STARTTLS with the same verification, EHLO, AUTH PLAIN or LOGIN
// when a username is set), then says QUIT without sending anything. It returns what it learnt
// and, on failure, the same *StepError sending would log (step, reply codes, operator hint);
// the result then holds what the steps before the failure learnt. Errors never contain the
// password.
func Probe(ctx context.Context, cfg config.Config) (ProbeResult, error) {
	m, err := New(cfg)
	if err != nil {
		return ProbeResult{Address: cfg.Address()}, err
	}
	res := ProbeResult{Address: m.addr}
	s, err := m.openAuthenticated(ctx, &res)
	if err != nil {
		return res, err
	}
	res.Authenticated = res.Did(StepAUTH)
	if err := s.quit(); err != nil {
		return res, err
	}
	res.step(StepQUIT)
	return res, nil
}
