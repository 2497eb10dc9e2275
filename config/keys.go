package config

// This file is the one table of configuration keys: every key Parse reads, with its default,
// whether its value is a secret, the README section that documents it, and what the effective
// configuration shows for it. Keys, SecretKeys and Config.Effective are derived from it, so a
// new key is one row here (plus its parsing and its README row, which a test checks).

import (
	"fmt"
	"net/mail"
	"strconv"
	"strings"
	"time"
)

// The README.md sections whose key tables document the keys (keyDef.doc).
const (
	docKeys  = "Configuration keys"
	docOAuth = "Modern authentication (OAuth 2.0)"
)

// keyDef describes one key of an [OUTPUT] smtp section.
type keyDef struct {
	// name is the key as written in a configuration, lower case. None is a key Fluent Bit
	// core takes for itself (host, port, tls, tls.*, net.*, workers, oauth2* in 5.x, ...).
	name string
	// required: Parse fails when the key is unset (secret_key: unless secret_key_file is set).
	required bool
	// def is the value an unset key means, written as in a configuration; "" when an unset
	// key means nothing is set or a value computed from other keys (tls_server_name).
	def string
	// secret: the value never appears in an error, a log line or the effective configuration.
	secret bool
	// doc is the README.md section whose key table has the key's row.
	doc string
	// show gives the settings the effective configuration shows for the key, in order, or
	// none when the key is not in use; nil when another key's settings show what it means
	// (is_authlogin is part of auth=, password_file of password=). A secret key's show
	// never reveals the value (Secret.String) and Effective redacts it again.
	show func(c Config) []setting
}

// setting is one name=value of the effective configuration; an empty name is the key's own.
type setting struct{ name, value string }

// keyTable is every key, in the order the effective configuration shows them.
var keyTable = []keyDef{
	{name: "dest_host", required: true, doc: docKeys, show: func(c Config) []setting {
		out := []setting{{"", c.Address()}}
		if c.Provider != "" {
			out = append(out, setting{"provider", c.Provider}) // its max_connections default
		}
		return out
	}},
	{name: "is_starttls", def: "false", doc: docKeys, show: func(c Config) []setting {
		if c.StartTLS {
			return []setting{{"tls", "starttls"}}
		}
		return []setting{{"tls", "implicit"}}
	}},
	{name: "tls_verify", def: "true", doc: docKeys, show: flag(func(c Config) bool { return c.TLSVerify })},
	{name: "tls_server_name", doc: docKeys, show: text(func(c Config) string { return c.TLSServerName })},
	{name: "tls_ca_file", doc: docKeys, show: text(func(c Config) string { return c.TLSCAFile })},
	{name: "from_email", required: true, doc: docKeys, show: text(func(c Config) string { return c.From.String() })},
	{name: "dest_email", required: true, doc: docKeys, show: text(func(c Config) string { return addressList(c.To) })},
	{name: "cc_email", doc: docKeys, show: text(func(c Config) string { return addressList(c.Cc) })},
	{name: "bcc_email", doc: docKeys, show: text(func(c Config) string { return addressList(c.Bcc) })},
	// auth= sums up auth_mechanism, is_authlogin and whether credentials are set; the
	// identity and the token source follow it.
	{name: "auth_mechanism", def: MechPlain, doc: docOAuth, show: func(c Config) []setting {
		auth := "none"
		switch {
		case c.OAuth():
			auth = c.AuthMechanism
		case c.Username != "" && c.AuthLogin:
			auth = MechLogin
		case c.Username != "":
			auth = MechPlain
		}
		out := []setting{{"auth", auth}, {"username", c.Username}}
		if c.OAuth() {
			out = append(out, setting{"auth_source", c.Auth.Source})
		}
		return out
	}},
	{name: "is_authlogin", def: "false", doc: docKeys},
	{name: "username", doc: docKeys},
	// The token source's keys, each shown only with the sources that use it.
	{name: "auth_token_file", doc: docOAuth, show: token(func(a Auth) []setting {
		return []setting{{"", a.TokenFile}}
	}, SourceTokenFile)},
	{name: "auth_service_account_file", doc: docOAuth, show: token(func(a Auth) []setting {
		return []setting{{"", a.ServiceAccountFile}, {"service_account", a.ClientID}}
	}, SourceServiceAccount)},
	{name: "auth_token_url", doc: docOAuth, show: token(func(a Auth) []setting {
		return []setting{{"", a.TokenURL}}
	}, SourceServiceAccount, SourceClientSecret, SourceClientCert, SourceClientAssertion)},
	{name: "auth_client_id", doc: docOAuth, show: token(func(a Auth) []setting {
		return []setting{{"", a.ClientID}}
	}, SourceClientSecret, SourceClientCert, SourceClientAssertion)},
	{name: "auth_scope", doc: docOAuth, show: token(func(a Auth) []setting {
		return []setting{{"", strings.Join(a.Scopes, " ")}}
	}, SourceServiceAccount, SourceClientSecret, SourceClientCert, SourceClientAssertion)},
	{name: "auth_client_secret", secret: true, doc: docOAuth, show: token(func(a Auth) []setting {
		return []setting{{"", a.ClientSecret.String()}}
	}, SourceClientSecret)},
	{name: "auth_client_auth", def: "post", doc: docOAuth, show: token(func(a Auth) []setting {
		if a.ClientAuthBasic {
			return []setting{{"", "basic"}}
		}
		return []setting{{"", "post"}}
	}, SourceClientSecret)},
	{name: "auth_client_cert_file", doc: docOAuth, show: token(func(a Auth) []setting {
		return []setting{{"", a.ClientCertFile}}
	}, SourceClientCert)},
	{name: "auth_client_key_file", doc: docOAuth, show: token(func(a Auth) []setting {
		return []setting{{"", a.ClientKeyFile}}
	}, SourceClientCert)},
	{name: "auth_client_assertion_file", doc: docOAuth, show: token(func(a Auth) []setting {
		return []setting{{"", a.ClientAssertionFile}}
	}, SourceClientAssertion)},
	{name: "auth_client_secret_file", doc: docOAuth},
	{name: "password", secret: true, doc: docKeys, show: func(c Config) []setting {
		if c.OAuth() {
			return nil // a token replaces it
		}
		return []setting{{"", c.Password.String()}}
	}},
	{name: "password_file", doc: docKeys},
	{name: "secret_key", required: true, secret: true, doc: docKeys, show: text(func(c Config) string { return c.SecretKey.String() })},
	{name: "secret_key_file", doc: docKeys},
	{name: "is_readable", def: "false", doc: docKeys, show: flag(func(c Config) bool { return c.Readable })},
	{name: "subject", def: DefaultSubject, doc: docKeys, show: text(func(c Config) string { return c.Subject.Raw })},
	{name: "timeout", def: formatDuration(DefaultTimeout), doc: docKeys, show: text(func(c Config) string { return c.Timeout.String() })},
	{name: "helo_name", doc: docKeys, show: text(func(c Config) string { return c.HeloName })},
	{name: "json_date_key", def: DefaultJSONDateKey, doc: docKeys, show: text(func(c Config) string { return c.JSONDateKey })},
	{name: "max_connections", def: strconv.Itoa(DefaultMaxConnections), doc: docKeys, show: number(func(c Config) int64 { return int64(c.MaxConnections) })},
	// quota_pause shows where quota replies are expected (a known provider) or when it is set.
	{name: "quota_pause", def: formatDuration(DefaultQuotaPause), doc: docKeys, show: with(func(c Config) bool {
		return c.Provider != "" || c.QuotaPause != 0 && c.QuotaPause != DefaultQuotaPause
	}, text(func(c Config) string { return c.QuotaPause.String() }))},
	{name: "max_emails_per_minute", def: "0", doc: docKeys, show: number(func(c Config) int64 { return int64(c.MaxEmailsPerMinute) })},
	// The digest keys show only when digests are on (digest_window set).
	{name: "digest_window", def: "0", doc: docKeys, show: with(digestOn, text(func(c Config) string { return c.DigestWindow.String() }))},
	{name: "digest_by", doc: docKeys, show: with(digestOn, text(func(c Config) string { return digestByText(c.DigestBy) }))},
	{name: "digest_max_records", def: strconv.Itoa(DefaultDigestMaxRecords), doc: docKeys, show: with(digestOn,
		number(func(c Config) int64 { return int64(c.DigestMaxRecords) }))},
	{name: "pipelining", def: "true", doc: docKeys, show: flag(func(c Config) bool { return !c.DisablePipelining })},
	{name: "chunking", def: "true", doc: docKeys, show: flag(func(c Config) bool { return !c.DisableChunking })},
	{name: "pipeline_depth", def: strconv.Itoa(DefaultPipelineDepth), doc: docKeys, show: number(func(c Config) int64 { return int64(c.PipelineDepth) })},
	{name: "dead_letter_dir", doc: docKeys, show: text(func(c Config) string { return c.DeadLetterDir })},
	{name: "dead_letter_max_size", def: formatSize(DefaultDeadLetterMaxSize), doc: docKeys, show: with(func(c Config) bool { return c.DeadLetterDir != "" },
		number(func(c Config) int64 { return c.DeadLetterMaxSize }))},
	{name: "flush_timeout", def: formatDuration(DefaultFlushTimeout), doc: docKeys, show: text(func(c Config) string { return c.FlushTimeout.String() })},
	{name: "ledger_dir", doc: docKeys, show: text(func(c Config) string { return c.LedgerDir })},
	{name: "ledger_max_entries", def: strconv.Itoa(DefaultLedgerMaxEntries), doc: docKeys, show: with(ledgerOnDisk,
		number(func(c Config) int64 { return int64(c.LedgerMaxEntries) }))},
	{name: "ledger_max_age", def: formatDuration(DefaultLedgerMaxAge), doc: docKeys, show: with(ledgerOnDisk,
		text(func(c Config) string { return c.LedgerMaxAge.String() }))},
}

// Keys lists every key Parse reads, in the order the effective configuration shows them.
var Keys = func() []string {
	out := make([]string, len(keyTable))
	for i, k := range keyTable {
		out[i] = k.name
	}
	return out
}()

// SecretKeys are the keys whose values are never printed: not in errors, logs, or the
// effective configuration.
var SecretKeys = func() map[string]bool {
	out := make(map[string]bool)
	for _, k := range keyTable {
		if k.secret {
			out[k.name] = true
		}
	}
	return out
}()

// Effective describes c on one line, name=value, in the order of the key table: the line
// the plugin logs when it starts and `smtpout check` prints. Secret keys show [redacted]
// (or (unset)), never their values; a value that is empty or holds a space, a quote, =, a
// comma or <> is quoted.
func (c Config) Effective() string {
	var b strings.Builder
	for _, k := range keyTable {
		if k.show == nil {
			continue
		}
		for _, s := range k.show(c) {
			name, v := s.name, s.value
			if name == "" {
				name = k.name
			}
			if k.secret {
				v = redacted(v)
			}
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(name)
			b.WriteByte('=')
			if v == "" || strings.ContainsAny(v, " \t\"=,<>") {
				fmt.Fprintf(&b, "%q", v)
			} else {
				b.WriteString(v)
			}
		}
	}
	return b.String()
}

// text shows a key as one setting: its name and value(c).
func text(value func(Config) string) func(Config) []setting {
	return func(c Config) []setting { return []setting{{"", value(c)}} }
}

// flag shows a boolean key: true or false.
func flag(value func(Config) bool) func(Config) []setting {
	return text(func(c Config) string { return strconv.FormatBool(value(c)) })
}

// number shows an integer key in decimal.
func number(value func(Config) int64) func(Config) []setting {
	return text(func(c Config) string { return strconv.FormatInt(value(c), 10) })
}

// with shows a key only when used(c): a bound of a feature that is on.
func with(used func(Config) bool, show func(Config) []setting) func(Config) []setting {
	return func(c Config) []setting {
		if !used(c) {
			return nil
		}
		return show(c)
	}
}

func ledgerOnDisk(c Config) bool { return c.LedgerDir != "" }

func digestOn(c Config) bool { return c.DigestOn() }

// token shows a token-source key only when c authenticates with a token from one of sources.
func token(show func(Auth) []setting, sources ...string) func(Config) []setting {
	return func(c Config) []setting {
		if !c.OAuth() {
			return nil
		}
		for _, s := range sources {
			if c.Auth.Source == s {
				return show(c.Auth)
			}
		}
		return nil
	}
}

// redacted shows whether a secret is set, never its value.
func redacted(s string) string {
	if s == "" {
		return "(unset)"
	}
	return "[redacted]"
}

func addressList(as []mail.Address) string {
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = a.String()
	}
	return strings.Join(parts, ", ")
}

// formatDuration writes a default duration as a configuration would: 30s, 24h.
func formatDuration(d time.Duration) string {
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if d >= u.unit && d%u.unit == 0 {
			return strconv.FormatInt(int64(d/u.unit), 10) + u.name
		}
	}
	return d.String()
}

// formatSize writes a default size as a configuration would: 100M.
func formatSize(n int64) string {
	for _, u := range []struct {
		unit int64
		name string
	}{{1 << 30, "G"}, {1 << 20, "M"}, {1 << 10, "K"}} {
		if n >= u.unit && n%u.unit == 0 {
			return strconv.FormatInt(n/u.unit, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}
