package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strings"
	"time"

	"github.com/wneessen/go-mail/smtp"

	"github.com/smtpout/smtpout/config"
)

// This file holds a probe written against go-mail's smtp package with the plugin's TLS and
// AUTH rules (TLS always, implicit or mandatory STARTTLS, TLS 1.2 minimum, verification
// against the system roots plus tls_ca_file, AUTH mandatory when a username is set). It
// belongs in the mailer package, next to the dialling code it mirrors.

// probeExtensions are the EHLO keywords the probe reports, in this order.
var probeExtensions = []string{"SIZE", "PIPELINING", "CHUNKING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN", "REQUIRETLS", "STARTTLS"}

// probeResult is what a probe learned, as far as it got.
type probeResult struct {
	Address   string        // host:port dialled
	Remote    string        // the address actually connected to
	Connect   time.Duration // TCP connect time
	Greeting  string        // the server's EHLO reply text (its name)
	TLS       *tls.ConnectionState
	Verified  bool              // the certificate chain and name were verified
	Ext       map[string]string // advertised extensions among probeExtensions, with parameters
	ExtSeen   map[string]bool   // which of probeExtensions were advertised
	AuthMechs []string          // AUTH mechanisms advertised (after TLS)
	AuthMech  string            // the mechanism used, "" when no username is configured
	AuthOK    bool              // authentication succeeded
	Steps     []string          // the steps completed, for the report
}

// probeError is a failed step with an operator's diagnosis.
type probeError struct {
	Step string // connect, tls, greeting, ehlo, starttls, auth
	Err  error
	Hint string
}

func (e *probeError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *probeError) Unwrap() error { return e.Err }

// tlsConfigFor builds the TLS client configuration the plugin uses for cfg.
func tlsConfigFor(cfg config.Config) (*tls.Config, error) {
	tc := &tls.Config{ServerName: cfg.TLSServerName, MinVersion: tls.VersionTLS12}
	if tc.ServerName == "" {
		tc.ServerName = cfg.Host
	}
	if len(cfg.TLSCAPEM) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(cfg.TLSCAPEM) {
			return nil, fmt.Errorf("tls_ca_file %s: no PEM certificate", cfg.TLSCAFile)
		}
		tc.RootCAs = pool
	}
	tc.InsecureSkipVerify = !cfg.TLSVerify
	return tc, nil
}

// probe connects to cfg's server, negotiates TLS as the plugin would, authenticates when
// credentials are configured, and says QUIT. It sends no message. The result holds what was
// learnt even when err (a *probeError) is not nil.
func probe(ctx context.Context, cfg config.Config) (res probeResult, err error) {
	res.Address = cfg.Address()
	res.Ext = map[string]string{}
	res.ExtSeen = map[string]bool{}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = config.DefaultTimeout
	}
	tc, err := tlsConfigFor(cfg)
	if err != nil {
		return res, &probeError{Step: "tls", Err: err, Hint: "fix tls_ca_file"}
	}
	d := net.Dialer{Timeout: timeout}
	start := time.Now()
	conn, err := d.DialContext(ctx, "tcp", res.Address)
	if err != nil {
		return res, &probeError{Step: "connect", Err: err, Hint: connectHint(cfg, err)}
	}
	res.Connect = time.Since(start)
	res.Remote = conn.RemoteAddr().String()
	res.Steps = append(res.Steps, "connect")
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	deadline := func() { _ = conn.SetDeadline(time.Now().Add(timeout)) }
	if d, ok := ctx.Deadline(); ok {
		stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(d) })
		defer stop()
	}

	if !cfg.StartTLS {
		deadline()
		tconn := tls.Client(conn, tc)
		if err := tconn.HandshakeContext(ctx); err != nil {
			return res, &probeError{Step: "tls", Err: err, Hint: tlsHint(cfg, err)}
		}
		conn = tconn
		st := tconn.ConnectionState()
		res.TLS = &st
		res.Steps = append(res.Steps, "tls")
	}
	deadline()
	c, err := smtp.NewClient(conn, cfg.Host)
	if err != nil {
		return res, &probeError{Step: "greeting", Err: err, Hint: greetingHint(cfg, err)}
	}
	helo := cfg.HeloName
	if helo == "" {
		if h, herr := os.Hostname(); herr == nil && h != "" {
			helo = h
		} else {
			helo = "localhost"
		}
	}
	deadline()
	if err := c.Hello(helo); err != nil {
		return res, &probeError{Step: "ehlo", Err: err, Hint: "the server refused EHLO " + helo + ": set helo_name to a name it accepts"}
	}
	res.Greeting = c.HelloResponse()
	res.Steps = append(res.Steps, "ehlo")
	if cfg.StartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return res, &probeError{Step: "starttls", Err: errors.New("the server does not offer STARTTLS"),
				Hint: "the plugin never sends without TLS: enable STARTTLS on the server, or use its implicit TLS port (465) with is_starttls false"}
		}
		deadline()
		if err := c.StartTLS(tc); err != nil {
			return res, &probeError{Step: "starttls", Err: err, Hint: tlsHint(cfg, err)}
		}
		st, _ := c.TLSConnectionState()
		res.TLS = &st
		res.Steps = append(res.Steps, "starttls")
	}
	for _, ext := range probeExtensions {
		if ok, param := c.Extension(ext); ok {
			res.ExtSeen[ext] = true
			res.Ext[ext] = param
		}
	}
	if ok, mechs := c.Extension("AUTH"); ok {
		res.AuthMechs = strings.Fields(mechs)
	}
	if cfg.Username != "" {
		res.AuthMech = "PLAIN"
		if cfg.AuthLogin {
			res.AuthMech = "LOGIN"
		}
		if len(res.AuthMechs) == 0 {
			return res, &probeError{Step: "auth", Err: errors.New("the server offers no AUTH"),
				Hint: "username is set, so the plugin requires AUTH and will not send: check the server's AUTH settings (some servers offer AUTH only on the submission port 587 with STARTTLS), or remove username and password"}
		}
		if !containsFold(res.AuthMechs, res.AuthMech) {
			other := "is_authlogin true (AUTH LOGIN)"
			if cfg.AuthLogin {
				other = "is_authlogin false (AUTH PLAIN)"
			}
			return res, &probeError{Step: "auth", Err: fmt.Errorf("the server does not offer AUTH %s (it offers %s)", res.AuthMech, strings.Join(res.AuthMechs, " ")),
				Hint: "set " + other + " if the server offers that mechanism"}
		}
		var a smtp.Auth
		if cfg.AuthLogin {
			a = smtp.LoginAuth(cfg.Username, cfg.Password.Reveal(), cfg.Host, false)
		} else {
			a = smtp.PlainAuth("", cfg.Username, cfg.Password.Reveal(), cfg.Host, false)
		}
		deadline()
		if err := c.Auth(a); err != nil {
			return res, &probeError{Step: "auth", Err: redactAuth(err, cfg), Hint: authHint(err)}
		}
		res.AuthOK = true
		res.Steps = append(res.Steps, "auth")
	}
	deadline()
	if err := c.Quit(); err != nil && !errors.Is(err, io.EOF) {
		return res, &probeError{Step: "quit", Err: err, Hint: "the server closed the session badly; delivery may still work"}
	}
	conn = nil // Quit closed it
	res.Steps = append(res.Steps, "quit")
	return res, nil
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// redactAuth makes sure an AUTH error carries neither the password nor the username's
// encoded credentials (servers sometimes echo what they received).
func redactAuth(err error, cfg config.Config) error {
	msg := err.Error()
	if p := cfg.Password.Reveal(); p != "" && strings.Contains(msg, p) {
		return errors.New(strings.ReplaceAll(msg, p, "[redacted]"))
	}
	return err
}

func connectHint(cfg config.Config, err error) string {
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("the name %q does not resolve: check dest_host and this machine's DNS", cfg.Host)
	case strings.Contains(err.Error(), "connection refused"):
		return fmt.Sprintf("nothing listens on %s: check the port in dest_host (465 implicit TLS, 587 STARTTLS) and that the server is up", cfg.Address())
	case isTimeout(err):
		return fmt.Sprintf("no answer from %s within %s: a firewall may drop the traffic (many networks block outgoing SMTP ports), or the host is down", cfg.Address(), cfg.Timeout)
	}
	return "check dest_host and the network path to the server"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

func tlsHint(cfg config.Config, err error) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var rec tls.RecordHeaderError
	switch {
	case errors.As(err, &unknown):
		return "the server's certificate is signed by an authority this machine does not trust: set tls_ca_file to the PEM of your CA (or fix the server's certificate chain)"
	case errors.As(err, &host):
		return fmt.Sprintf("the certificate is not valid for %q: set tls_server_name to a name it holds, or use that name in dest_host", cfg.TLSServerName)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "the server's certificate has expired (or this machine's clock is wrong): renew it"
	case errors.As(err, &rec) || strings.Contains(err.Error(), "first record does not look like a TLS handshake"):
		if cfg.StartTLS {
			return "the server did not answer STARTTLS with TLS"
		}
		return "the server speaks plain SMTP on this port: it expects STARTTLS; set is_starttls true (usually with port 587), or use the implicit TLS port 465"
	case isTimeout(err):
		return "the TLS handshake timed out: the port may expect STARTTLS (set is_starttls true) or the network drops the traffic"
	case strings.Contains(err.Error(), "protocol version"):
		return "the server does not speak TLS 1.2 or newer, which the plugin requires: upgrade the server's TLS settings"
	}
	return "TLS failed: check dest_host, tls_server_name and tls_ca_file"
}

func greetingHint(cfg config.Config, err error) string {
	if isTimeout(err) && cfg.StartTLS {
		return "no SMTP greeting: the port probably expects implicit TLS (465): set is_starttls false, or use the STARTTLS port 587"
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		return fmt.Sprintf("the server refused the session with %d: it may be rejecting this machine's address", te.Code)
	}
	if isTimeout(err) {
		return "no SMTP greeting within the timeout: check that dest_host points at an SMTP server"
	}
	return "the server closed the connection before greeting: check that dest_host points at an SMTP server"
}

func authHint(err error) string {
	var te *textproto.Error
	if errors.As(err, &te) {
		switch {
		case te.Code == 535:
			return "the server refused the credentials: check username and password (some providers need an app password)"
		case te.Code == 534 || te.Code == 538:
			return "the server wants a stronger mechanism or encryption for AUTH"
		case te.Code >= 400 && te.Code < 500:
			return "a temporary AUTH failure: the plugin will retry; if it persists, check the server"
		}
	}
	return "authentication failed: check username, password and is_authlogin"
}

// formatProbe writes what a probe learned.
func formatProbe(w io.Writer, name string, cfg config.Config, res probeResult, now time.Time) {
	mode := "implicit TLS"
	if cfg.StartTLS {
		mode = "STARTTLS"
	}
	fmt.Fprintf(w, "probe %s: %s (%s)\n", name, res.Address, mode)
	if res.Remote != "" {
		fmt.Fprintf(w, "  connected:   %s in %.1f ms\n", res.Remote, float64(res.Connect.Microseconds())/1000)
	}
	if st := res.TLS; st != nil {
		fmt.Fprintf(w, "  tls:         %s, %s\n", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
		if len(st.PeerCertificates) > 0 {
			c := st.PeerCertificates[0]
			fmt.Fprintf(w, "  certificate: subject %q, issuer %q\n", c.Subject.String(), c.Issuer.String())
			fmt.Fprintf(w, "  expires:     %s (%s)\n", c.NotAfter.UTC().Format(time.RFC3339), untilText(c.NotAfter.Sub(now)))
			if len(c.DNSNames) > 0 || len(c.IPAddresses) > 0 {
				names := append([]string{}, c.DNSNames...)
				for _, ip := range c.IPAddresses {
					names = append(names, ip.String())
				}
				fmt.Fprintf(w, "  names:       %s\n", strings.Join(names, ", "))
			}
		}
		if cfg.TLSVerify {
			fmt.Fprintf(w, "  verified:    yes, for %q\n", cfg.TLSServerName)
		} else {
			fmt.Fprintf(w, "  verified:    NO (tls_verify false)\n")
		}
	}
	if res.Greeting != "" {
		fmt.Fprintf(w, "  server:      %s\n", res.Greeting)
	}
	if len(res.Steps) > 0 && containsFold(res.Steps, "ehlo") {
		var parts []string
		for _, ext := range []string{"SIZE", "PIPELINING", "CHUNKING"} {
			if !res.ExtSeen[ext] {
				parts = append(parts, ext+" no")
				continue
			}
			p := ext
			if ext == "SIZE" && res.Ext[ext] != "" {
				p += " " + res.Ext[ext]
			}
			parts = append(parts, p)
		}
		for _, ext := range probeExtensions[3:] {
			if res.ExtSeen[ext] && ext != "STARTTLS" {
				parts = append(parts, ext)
			}
		}
		fmt.Fprintf(w, "  extensions:  %s\n", strings.Join(parts, ", "))
		auth := "none offered"
		if len(res.AuthMechs) > 0 {
			auth = strings.Join(res.AuthMechs, " ")
		}
		fmt.Fprintf(w, "  auth offers: %s\n", auth)
	}
	switch {
	case cfg.Username == "" && containsFold(res.Steps, "ehlo"):
		fmt.Fprintf(w, "  auth:        not configured (no username): none attempted\n")
	case res.AuthOK:
		fmt.Fprintf(w, "  auth:        %s as %s: accepted\n", res.AuthMech, cfg.Username)
	}
}

func untilText(d time.Duration) string {
	if d < 0 {
		return "EXPIRED " + (-d).Round(time.Hour).String() + " ago"
	}
	days := int(d.Hours() / 24)
	if days >= 2 {
		return fmt.Sprintf("in %d days", days)
	}
	return "in " + d.Round(time.Minute).String()
}

const probeDescription = `
Connects to the SMTP server of one smtp output exactly as the plugin does: TCP, then
implicit TLS or mandatory STARTTLS (is_starttls), certificate verification (tls_verify,
tls_ca_file, tls_server_name), EHLO, and AUTH PLAIN or LOGIN when username is set. It sends no
message (QUIT). Prints the TLS version and cipher, the certificate's subject, issuer and expiry,
the extensions the server advertises (SIZE, PIPELINING, CHUNKING, AUTH mechanisms...), and on
failure the step that failed with a diagnosis. The password is never printed.

Exit status: 0 when the server is ready to take the output's email, 1 when a step fails or the
configuration is invalid, 2 on a bad command line.`

func runProbe(e *env, args []string) int {
	fs := newFlagSet(e, "probe", "-c FILE [--output NAME|INDEX] [--timeout D]", probeDescription)
	file := fs.String("c", "", "Fluent Bit configuration `file`")
	fs.StringVar(file, "config", "", "same as -c")
	sel := fs.String("output", "", "the smtp output: alias, instance name (smtp.N) or `index` among smtp outputs (needed when there are several)")
	timeout := fs.Duration("timeout", 0, "overall time limit (default: the output's timeout per step)")
	if code, done := parseFlags(e, fs, args); done {
		return code
	}
	if *file == "" {
		return usageError(e, "probe", "-c FILE is required")
	}
	if fs.NArg() > 0 {
		return usageError(e, "probe", "unexpected argument %q", fs.Arg(0))
	}
	o, err := pickOutput(e, *file, *sel)
	if err != nil {
		fmt.Fprintf(e.stdout, "FAILED: %v\n", err)
		return exitFail
	}
	cfg, err := parseOutput(o)
	if err != nil {
		fmt.Fprintf(e.stdout, "FAILED %s: invalid configuration (run smtpout check):\n", o.Instance)
		for _, p := range splitJoined(err) {
			fmt.Fprintf(e.stdout, "  %v\n", p)
		}
		return exitFail
	}
	ctx := context.Background()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(e.stdout, "warning: %s\n", w)
	}
	res, err := probe(ctx, cfg)
	formatProbe(e.stdout, o.Instance, cfg, res, time.Now())
	if err != nil {
		var pe *probeError
		fmt.Fprintf(e.stdout, "FAILED %s: %v\n", o.Instance, err)
		if errors.As(err, &pe) && pe.Hint != "" {
			fmt.Fprintf(e.stdout, "  hint: %s\n", pe.Hint)
		}
		return exitFail
	}
	fmt.Fprintf(e.stdout, "OK %s: the server accepts this output's connection, TLS and credentials\n", o.Instance)
	return exitOK
}

// splitJoined undoes errors.Join.
func splitJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
