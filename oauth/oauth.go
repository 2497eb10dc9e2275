// Package oauth obtains and renews the OAuth 2.0 access tokens that SMTP AUTH XOAUTH2 and
// OAUTHBEARER present: client credentials (secret, certificate, federated assertion) and
// Google service accounts through golang.org/x/oauth2, or a token file kept fresh by someone
// else. A Provider caches one token per output instance for every connection and Worker,
// renews it ahead of expiry with one request at a time, and backs off after a failure. It
// never logs, and its errors never hold a secret, an assertion or a token.
package oauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/smtpout/smtpout/config"
)

// Timing of renewals and back-off.
const (
	// RefreshAhead is how long before expiry a token is renewed (a third of the lifetime for
	// tokens that live less than three times this).
	RefreshAhead = time.Minute
	// MinBackoff and MaxBackoff bound the wait after a failed token request.
	MinBackoff = time.Second
	MaxBackoff = time.Minute
)

// Token is an access token and what is known about it.
type Token struct {
	// Value is the access token itself: never log it.
	Value string
	// Obtained is when it was fetched; Expiry when it expires (zero: unknown).
	Obtained, Expiry time.Time
	// gen numbers the fetches of one Provider, so a refusal names the fetch it refused even
	// when two fetches brought the same value (an unchanged token file).
	gen uint64
}

// Lifetime is Expiry - Obtained, or 0 when the expiry is unknown.
func (t Token) Lifetime() time.Duration {
	if t.Expiry.IsZero() {
		return 0
	}
	return t.Expiry.Sub(t.Obtained)
}

// fetcher obtains a new token.
type fetcher interface {
	fetch(ctx context.Context) (*oauth2.Token, error)
}

// changer is a fetcher whose token can change behind its back (a token file): changed
// reports whether it differs from what the last fetch saw, so it is fetched again at once,
// back-off or not.
type changer interface {
	changed() bool
}

// Stats counts token requests by result.
type Stats struct {
	OK, Failed int64
}

// Provider hands out the current token of one output instance, fetching and renewing it.
// It is safe for concurrent use.
type Provider struct {
	src      fetcher
	endpoint string // the token URL or file, for errors and probes
	now      func() time.Time

	mu       sync.Mutex
	tok      *Token
	fetching chan struct{} // closed when the fetch in flight ends; nil when none
	gen      uint64        // fetches that brought a token
	lastErr  error
	retryAt  time.Time
	backoff  time.Duration
	// refusals counts the tokens servers refused in a row (reset when one is accepted), and
	// refusedGen is the fetch of the last one refused.
	refusals   int
	refusedGen uint64

	ok, failed atomic.Int64
}

// New builds the Provider for cfg's token source, or returns nil, nil when cfg does not use
// a token (auth_mechanism plain or login). It reads no file and sends no request.
func New(cfg config.Config) (*Provider, error) {
	if !cfg.OAuth() {
		return nil, nil
	}
	a := cfg.Auth
	hc, err := httpClient(cfg)
	if err != nil {
		return nil, err
	}
	p := &Provider{endpoint: a.TokenURL, now: time.Now}
	switch a.Source {
	case config.SourceClientSecret:
		p.src = &clientSecret{auth: a, hc: hc}
	case config.SourceClientCert:
		s, err := newClientCert(a, hc)
		if err != nil {
			return nil, err
		}
		p.src = s
	case config.SourceClientAssertion:
		p.src = &clientAssertion{auth: a, hc: hc}
	case config.SourceServiceAccount:
		p.src = &serviceAccount{auth: a, subject: cfg.Username, hc: hc}
	case config.SourceTokenFile:
		p.src = &tokenFile{path: a.TokenFile}
		p.endpoint = "file " + a.TokenFile
	default:
		return nil, fmt.Errorf("oauth: unknown token source %q", a.Source)
	}
	return p, nil
}

// httpClient builds the client for the token endpoint: system roots plus tls_ca_file, TLS 1.2
// minimum, the instance's timeout, no redirects to plain http.
func httpClient(cfg config.Config) (*http.Client, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if len(cfg.TLSCAPEM) > 0 && !roots.AppendCertsFromPEM(cfg.TLSCAPEM) {
		return nil, fmt.Errorf("oauth: tls_ca_file %q: no PEM certificate found", cfg.TLSCAFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	tr.Proxy = http.ProxyFromEnvironment
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = config.DefaultTimeout
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme != "https" {
				return errors.New("redirect to a non-https URL refused")
			}
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			return nil
		},
	}, nil
}

// Endpoint is the token URL (or "file PATH") tokens come from.
func (p *Provider) Endpoint() string { return p.endpoint }

// Stats returns how many token requests succeeded and failed so far.
func (p *Provider) Stats() Stats { return Stats{OK: p.ok.Load(), Failed: p.failed.Load()} }

// ahead is how long before expiry t is renewed: a minute, or a third of its lifetime when it
// lives less than three minutes.
func ahead(t *Token) time.Duration {
	if l := t.Lifetime(); l < 3*RefreshAhead {
		return l / 3
	}
	return RefreshAhead
}

// refreshAt is when t should be renewed (zero: never, its expiry is unknown).
func refreshAt(t *Token) time.Time {
	if t.Expiry.IsZero() {
		return time.Time{}
	}
	return t.Expiry.Add(-ahead(t))
}

// usable reports whether t may still be handed out at now while a renewal is in flight or
// backing off: it has at least half of the renewal margin left, so it does not expire on its
// way to the server.
func usable(t *Token, now time.Time) bool {
	return t != nil && (t.Expiry.IsZero() || now.Before(t.Expiry.Add(-ahead(t)/2)))
}

// fresh reports whether t needs no renewal at now.
func fresh(t *Token, now time.Time) bool {
	if t == nil {
		return false
	}
	r := refreshAt(t)
	return r.IsZero() || now.Before(r)
}

// Token returns the current token, fetching a new one when there is none, it is due for
// renewal, or its source changed (a token file written again). One request runs at a time:
// concurrent callers wait for it, or keep using the current token while it has margin left.
// After a failure (a failed request, a token already expired, or a token servers refused
// twice in a row), callers get the failure (a *WaitError) at once until the back-off has
// passed (1s, doubling up to a minute), unless the source changed meanwhile. A caller whose
// ctx ends stops waiting; the request it started goes on for the others, bounded by the HTTP
// client's timeout.
func (p *Provider) Token(ctx context.Context) (Token, error) {
	for {
		p.mu.Lock()
		now := p.now()
		if ch := p.fetching; ch != nil {
			if usable(p.tok, now) {
				t := *p.tok
				p.mu.Unlock()
				return t, nil
			}
			p.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return Token{}, ctx.Err()
			}
		}
		// No fetch is in flight, so the source's notion of its last fetch is stable.
		c, ok := p.src.(changer)
		changed := ok && c.changed()
		if changed {
			p.tok = nil // the file's new content replaces it, whatever it holds
		}
		if p.tok != nil && fresh(p.tok, now) {
			t := *p.tok
			p.mu.Unlock()
			return t, nil
		}
		if now.Before(p.retryAt) && !changed {
			if usable(p.tok, now) {
				t := *p.tok
				p.mu.Unlock()
				return t, nil
			}
			err := &WaitError{Err: p.lastErr, Until: p.retryAt}
			p.mu.Unlock()
			return Token{}, err
		}
		ch := make(chan struct{})
		p.fetching = ch
		p.mu.Unlock()
		// The request runs on its own, so a caller whose context ends (shutdown) returns at
		// once; the result is stored for everyone, and the loop reads it.
		go p.refresh(ctx, ch)
		select {
		case <-ch:
		case <-ctx.Done():
			return Token{}, ctx.Err()
		}
	}
}

// refresh runs one token request and stores its outcome: the new token, or the failure
// and the next back-off. A token that has already expired is a failure: handing it out would
// only have it refused, and fetching again at once would bring it back. It closes ch when
// done.
func (p *Provider) refresh(ctx context.Context, ch chan struct{}) {
	t, err := p.fetch(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fetching = nil
	close(ch)
	if err == nil && !t.Expiry.IsZero() && !p.now().Before(t.Expiry) {
		err = p.expired(t)
	}
	if err != nil {
		p.failed.Add(1)
		p.fail(err)
		return
	}
	p.ok.Add(1)
	p.gen++
	t.gen = p.gen
	p.tok, p.lastErr, p.retryAt = t, nil, time.Time{}
	if p.refusals == 0 {
		// Servers refusing tokens keep the back-off growing until one is accepted.
		p.backoff = 0
	}
}

// expired is the error of a fetch that brought a token past its expiry.
func (p *Provider) expired(t *Token) error {
	e := &Error{Endpoint: p.endpoint, Text: "the token expired at " + t.Expiry.UTC().Format(time.RFC3339)}
	if _, file := p.src.(changer); file {
		e.Hint = "whatever renews auth_token_file has stopped: the file is read again as soon as it changes"
	} else {
		e.Hint = "the endpoint issued a token that had already expired: check this host's clock"
	}
	return e
}

// fail records a failure: callers get err until the back-off (1s, doubling up to a minute)
// has passed. p.mu must be held.
func (p *Provider) fail(err error) {
	p.lastErr = err
	if p.backoff == 0 {
		p.backoff = MinBackoff
	} else {
		p.backoff = min(2*p.backoff, MaxBackoff)
	}
	p.retryAt = p.now().Add(p.backoff)
}

// fetch runs one token request, not cancelled with the caller's context (other callers may
// be waiting for it) but bounded by the HTTP client's timeout.
func (p *Provider) fetch(ctx context.Context) (*Token, error) {
	start := p.now()
	ot, err := p.src.fetch(context.WithoutCancel(ctx))
	if err != nil {
		return nil, tokenError(p.endpoint, err)
	}
	if ot.AccessToken == "" {
		return nil, &Error{Endpoint: p.endpoint, Text: "the response holds no access_token"}
	}
	return &Token{Value: ot.AccessToken, Obtained: start, Expiry: ot.Expiry}, nil
}

// Refused tells the Provider that a server refused t with err (which must hold no token),
// and drops t. The first refusal in a row returns again = true: the caller may fetch a new
// token and try once more at once, as a token revoked before its expiry is replaced without
// delay. A refusal of a later token is a failure like a failed request: Token returns err
// (in a *WaitError) until the back-off has passed, and the back-off keeps growing until a
// server accepts a token (Accepted). Concurrent refusals of one token count once.
func (p *Provider) Refused(t Token, err error) (again bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tok != nil && p.tok.gen == t.gen {
		p.tok = nil
	}
	if t.gen <= p.refusedGen {
		// Another connection's refusal of this token, or a late one of a token replaced
		// since: counted already, and the current token may be tried as the first would,
		// or as any token may once a later one was accepted (refusals back at 0).
		return p.refusals <= 1
	}
	p.refusedGen = t.gen
	p.refusals++
	if p.refusals == 1 {
		return true
	}
	p.fail(err)
	return false
}

// Accepted tells the Provider that a server accepted t: refusals no longer count against
// the tokens that follow.
func (p *Provider) Accepted(t Token) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.gen <= p.refusedGen || p.refusals == 0 {
		return
	}
	p.refusals = 0
	if p.retryAt.IsZero() {
		p.backoff = 0
	}
}

// WaitError is returned while the Provider waits before the next token request after a
// failed one. It wraps that failure.
type WaitError struct {
	Err   error
	Until time.Time
}

// Error returns the earlier failure's text: the same line while the failure lasts, so the
// log's repeat filter can hold it back.
func (e *WaitError) Error() string { return e.Err.Error() }

// Unwrap returns the failure of the last request.
func (e *WaitError) Unwrap() error { return e.Err }
