// Package config turns the key/value pairs of a Fluent Bit [OUTPUT] section into a validated,
// plain-data Config. It holds no cgo and does no network I/O, so it is tested with a map.
package config

import (
	"net/mail"
	"time"
)

// Getter reads one configuration key. An absent key reads as "", as FLBPluginConfigKey does.
type Getter interface {
	Get(key string) string
}

// MapGetter is a Getter over a map whose keys are lower-case key names. It serves tests and the
// command-line tools, which read keys from a configuration file rather than from Fluent Bit.
type MapGetter map[string]string

// Get returns the value of key, or "" when it is absent.
func (m MapGetter) Get(key string) string { return m[key] }

// Secret is a string that never prints: fmt, %v, %s, %q, %#v and go-cmp diffs all show
// "[redacted]". Call Reveal to use the value.
type Secret string

// String returns a redacted marker, never the value.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString returns a redacted marker, never the value.
func (s Secret) GoString() string { return s.String() }

// MarshalText redacts the value in JSON, YAML and other encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Reveal returns the secret value itself.
func (s Secret) Reveal() string { return string(s) }

// Default values of optional keys. Parse applies them and the key table (keys.go) shows them,
// so changing one here is the whole change in code; TestKeyTableMatchesREADME then asks for
// the README's row.
const (
	DefaultPortTLS        = 465
	DefaultPortSTARTTLS   = 587
	DefaultSubject        = "Fluent Bit: $TAG"
	DefaultTimeout        = 30 * time.Second
	DefaultJSONDateKey    = "date"
	DefaultMaxConnections = 4
	// DefaultQuotaPause is the first pause after a mail provider's quota reply (quota_pause);
	// each further one doubles it, up to an hour.
	DefaultQuotaPause = time.Minute
	// DefaultPipelineDepth is how many emails one connection sends back to back before it
	// reads their replies, with PIPELINING and CHUNKING (pipeline_depth). 1: a SIGKILL repeats
	// at most max_connections emails; against servers that store each message before they
	// reply, depth 16 saved at most a fifth of the CPU per email and no reliable throughput
	// (issue 22, README Performance).
	DefaultPipelineDepth = 1
	// DefaultDeadLetterMaxSize bounds dead_letter_dir when dead_letter_max_size is unset.
	DefaultDeadLetterMaxSize = 100 << 20
	// MinSecretKeyLen is the length below which secret_key draws a start-up warning.
	MinSecretKeyLen = 16
)

// Config is the validated configuration of one [OUTPUT] instance. It is plain data.
type Config struct {
	// Host and Port come from dest_host; Port defaults to 465, or 587 with is_starttls.
	Host string
	Port int

	// To, Cc and Bcc come from dest_email, cc_email and bcc_email, in the order given.
	To, Cc, Bcc []mail.Address
	// From comes from from_email: exactly one address.
	From mail.Address

	// Username is the AUTH identity: for xoauth2/oauthbearer the mailbox the token acts for
	// (from_email's address when username is unset).
	Username string
	Password Secret
	// AuthMechanism is auth_mechanism: MechPlain (default), MechLogin, MechXOAuth2 or
	// MechOAuthBearer; Auth is the token source of the last two (auth.go).
	AuthMechanism string
	Auth          Auth
	// SecretKey is the HMAC-SHA256 key that signs every email.
	SecretKey Secret

	// Readable selects the HTML format (is_readable).
	Readable bool
	// StartTLS selects STARTTLS instead of implicit TLS (is_starttls).
	StartTLS bool
	// AuthLogin selects AUTH LOGIN instead of AUTH PLAIN (is_authlogin).
	AuthLogin bool

	// Subject is the parsed subject template (default DefaultSubject).
	Subject Template

	// TLSVerify is false only when tls_verify is set to false.
	TLSVerify bool
	// TLSCAFile is the tls_ca_file path; TLSCAPEM its contents, read and checked at Parse.
	TLSCAFile string
	TLSCAPEM  []byte
	// TLSServerName is the name verified in the server certificate (default Host).
	TLSServerName string

	// Timeout bounds each SMTP step (timeout; default 30s).
	Timeout time.Duration
	// HeloName is the EHLO name; "" means the machine's host name.
	HeloName string
	// JSONDateKey is the key the record time is added under; "" leaves it out.
	JSONDateKey string
	// MaxConnections bounds the SMTP connections one instance opens at once (default
	// DefaultMaxConnections, or the Provider's when dest_host is one of its hosts).
	MaxConnections int
	// Provider names the mail provider dest_host belongs to (ProviderFor), or is "".
	Provider string
	// QuotaPause is the first pause after a provider's quota reply (quota_pause).
	QuotaPause time.Duration
	// DisablePipelining is true when pipelining is false: commands then go one round trip each
	// even when the server offers PIPELINING (RFC 2920).
	DisablePipelining bool
	// DisableChunking is true when chunking is false: DATA is used even when the server offers
	// CHUNKING (BDAT, RFC 3030).
	DisableChunking bool
	// PipelineDepth is how many emails one connection sends back to back, whole transactions
	// in one write, before it reads their replies, when the server offers PIPELINING and
	// CHUNKING (pipeline_depth): 1 sends one email per round trip.
	PipelineDepth int

	// DeadLetterDir is where permanently rejected records are written as .eml files with
	// their reason (dead_letter_dir); "" turns it off.
	DeadLetterDir string
	// DeadLetterMaxSize bounds the bytes kept in DeadLetterDir (dead_letter_max_size).
	DeadLetterMaxSize int64
	// MaxEmailsPerMinute is the storm guard (max_emails_per_minute): at most this many emails
	// per minute per instance; 0 turns it off.
	MaxEmailsPerMinute int

	// Durability: ledger_dir, ledger_max_entries, ledger_max_age, flush_timeout (ledger.go).
	Durability
	// Digests: digest_window, digest_by, digest_max_records (digest.go).
	Digests

	// Warnings are problems that do not stop start-up (a short secret_key, tls_verify false).
	Warnings []string
}

// Address returns Host and Port joined for dialling ("host:465", "[::1]:587").
func (c Config) Address() string {
	return joinHostPort(c.Host, c.Port)
}

// Recipients returns the envelope recipients: every To, Cc and Bcc address once, in that order.
// Addresses are compared case-insensitively.
func (c Config) Recipients() []string {
	seen := make(map[string]bool)
	var out []string
	for _, list := range [][]mail.Address{c.To, c.Cc, c.Bcc} {
		for _, a := range list {
			k := lower(a.Address)
			if seen[k] {
				continue
			}
			seen[k] = true
			out = append(out, a.Address)
		}
	}
	return out
}

// TokenKind says what one piece of a subject template stands for.
type TokenKind int

// The kinds of template token.
const (
	// Literal text, in Token.Text.
	Literal TokenKind = iota
	// TagToken is $TAG, the whole tag.
	TagToken
	// TagPartToken is $TAG[n]: part Token.Index of the tag split on dots, from 0.
	TagPartToken
	// KeyToken is $key or $key['a']['b']: the record value at Token.Path.
	KeyToken
)

// Token is one piece of a subject template.
type Token struct {
	Kind  TokenKind
	Text  string   // Literal
	Index int      // TagPartToken
	Path  []string // KeyToken: the top-level key, then each sub-key
}

// Template is a parsed Fluent Bit record accessor template such as "Alert $TAG: $cat".
type Template struct {
	Raw    string
	Tokens []Token
}
