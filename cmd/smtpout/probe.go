package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/mailer"
)

// probe is mailer.Probe: the plugin's own dialling code (TLS, EHLO, AUTH), run up to QUIT,
// so probe and plugin can never disagree.
var probe = mailer.Probe

// connectHint is the hint for a connection that could not be opened (the mailer gives none:
// the causes are outside the configuration's TLS and AUTH keys).
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

// formatProbe writes what a probe learned.
func formatProbe(w io.Writer, name string, cfg config.Config, res mailer.ProbeResult, now time.Time) {
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
		if c := res.Certificate(); c != nil {
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
		serverName := cfg.TLSServerName
		if serverName == "" {
			serverName = cfg.Host
		}
		if cfg.TLSVerify {
			fmt.Fprintf(w, "  verified:    yes, for %q\n", serverName)
		} else {
			fmt.Fprintf(w, "  verified:    NO (tls_verify false)\n")
		}
	}
	if res.Server != "" {
		fmt.Fprintf(w, "  server:      %s\n", res.Server)
	}
	if res.Did(mailer.StepEHLO) {
		var parts []string
		for _, ext := range []string{"SIZE", "PIPELINING", "CHUNKING"} {
			if !res.Has(ext) {
				parts = append(parts, ext+" no")
				continue
			}
			p := ext
			if ext == "SIZE" && res.Extensions[ext] != "" {
				p += " " + res.Extensions[ext]
			}
			parts = append(parts, p)
		}
		for _, ext := range mailer.ProbeExtensions {
			switch ext {
			case "SIZE", "PIPELINING", "CHUNKING", "STARTTLS", "AUTH":
				continue
			}
			if res.Has(ext) {
				parts = append(parts, ext)
			}
		}
		fmt.Fprintf(w, "  extensions:  %s\n", strings.Join(parts, ", "))
		auth := "none offered"
		if len(res.AuthMechanisms) > 0 {
			auth = strings.Join(res.AuthMechanisms, " ")
		}
		fmt.Fprintf(w, "  auth offers: %s\n", auth)
	}
	if ts := res.Token; ts != nil {
		life := "lifetime unknown"
		if ts.Lifetime > 0 {
			life = fmt.Sprintf("lifetime %s, %s left", ts.Lifetime.Round(time.Second), ts.Remaining)
		}
		fmt.Fprintf(w, "  token:       %s (%s): obtained, %s\n", ts.Endpoint, cfg.Auth.Source, life)
		if ts.Readable {
			c := ts.Claims
			var parts []string
			add := func(name string, v []string) {
				if len(v) > 0 {
					parts = append(parts, name+" "+strings.Join(v, " "))
				}
			}
			add("audience", c.Audience)
			add("scopes", c.Scopes)
			add("roles", c.Roles)
			if c.AppID != "" {
				parts = append(parts, "app "+c.AppID)
			}
			if len(parts) > 0 {
				fmt.Fprintf(w, "  token says:  %s\n", strings.Join(parts, "; "))
			}
		} else {
			fmt.Fprintf(w, "  token says:  (opaque: not a readable JWT)\n")
		}
	}
	switch {
	case cfg.Username == "" && res.Did(mailer.StepEHLO):
		fmt.Fprintf(w, "  auth:        not configured (no username): none attempted\n")
	case res.Authenticated && res.AuthRetried:
		fmt.Fprintf(w, "  auth:        %s as %s: accepted (the first token was refused; a new one was fetched and accepted)\n", res.AuthMechanism, cfg.Username)
	case res.Authenticated:
		fmt.Fprintf(w, "  auth:        %s as %s: accepted\n", res.AuthMechanism, cfg.Username)
	}
}

// failure splits a probe error into the line to print and the operator's hint: the
// mailer's own hint (the one sending logs), else one for a connection that failed.
func failure(cfg config.Config, err error) (text, hint string) {
	var se *mailer.StepError
	if !errors.As(err, &se) {
		return err.Error(), ""
	}
	bare := *se
	bare.Hint = ""
	hint = se.Hint
	if hint == "" && se.Step == mailer.StepDial {
		hint = connectHint(cfg, se.Err)
	}
	return bare.Error(), hint
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
tls_ca_file, tls_server_name), EHLO, and AUTH PLAIN or LOGIN when username is set, or, with
auth_mechanism xoauth2/oauthbearer, a token from the configured source (endpoint, lifetime,
and the token's audience, scopes and roles when it is a readable JWT) and then AUTH with it.
It sends no message (QUIT). Prints the TLS version and cipher, the certificate's subject, issuer and expiry,
the extensions the server advertises (SIZE, PIPELINING, CHUNKING, AUTH mechanisms...), and on
failure the step that failed with a diagnosis. The password, client secret and token are
never printed.

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
	o, cfg, ok := outputConfig(e, *file, *sel)
	if !ok {
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
	formatProbe(e.stdout, o.Label(), cfg, res, time.Now())
	if err != nil {
		text, hint := failure(cfg, err)
		fmt.Fprintf(e.stdout, "FAILED %s: %s\n", o.Label(), text)
		if hint != "" {
			fmt.Fprintf(e.stdout, "  hint: %s\n", hint)
		}
		return exitFail
	}
	fmt.Fprintf(e.stdout, "OK %s: the server accepts this output's connection, TLS and credentials\n", o.Label())
	return exitOK
}

// splitJoined undoes errors.Join.
func splitJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
