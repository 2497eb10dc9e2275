package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// KeyError is one problem with one configuration key.
type KeyError struct {
	Key    string
	Value  string // "" for secret keys: their values are never kept in an error
	Reason string
}

// Error names the key and, unless it is a secret, the offending value.
func (e *KeyError) Error() string {
	if e.Value == "" || SecretKeys[e.Key] {
		return fmt.Sprintf("%s: %s", e.Key, e.Reason)
	}
	return fmt.Sprintf("%s: %q: %s", e.Key, e.Value, e.Reason)
}

// MaxPipelineDepth is the largest pipeline_depth accepted.
const MaxPipelineDepth = 64

// MaxConnectionsLimit is the largest max_connections accepted.
const MaxConnectionsLimit = 64

type parser struct {
	get  Getter
	errs []error
}

func (p *parser) fail(key, value, format string, args ...any) {
	if SecretKeys[key] {
		value = ""
	}
	p.errs = append(p.errs, &KeyError{Key: key, Value: value, Reason: fmt.Sprintf(format, args...)})
}

// value returns the key's value with surrounding white space removed.
func (p *parser) value(key string) string { return strings.TrimSpace(p.get.Get(key)) }

// Parse reads and validates every key. All problems are returned together (errors.Join of
// *KeyError), each naming its key; a secret's value never appears in an error.
func Parse(g Getter) (Config, error) {
	p := &parser{get: g}
	var c Config

	readable := p.boolean("is_readable", false)
	c.Readable = readable
	c.StartTLS = p.boolean("is_starttls", false)
	c.AuthLogin = p.boolean("is_authlogin", false)
	c.TLSVerify = p.boolean("tls_verify", true)

	c.Host, c.Port = p.hostPort("dest_host", c.StartTLS)
	c.To = p.addressList("dest_email", true)
	c.Cc = p.addressList("cc_email", false)
	c.Bcc = p.addressList("bcc_email", false)
	if from := p.addressList("from_email", true); len(from) > 1 {
		p.fail("from_email", p.value("from_email"), "must be exactly one address, got %d", len(from))
	} else if len(from) == 1 {
		c.From = from[0]
	}

	p.auth(&c) // auth.go: username, password, auth_mechanism and the token sources

	c.SecretKey = p.secret("secret_key", "secret_key_file")
	switch {
	case c.SecretKey == "":
		p.fail("secret_key", "", "is required: the shared secret that signs every email")
	case len(c.SecretKey) < MinSecretKeyLen:
		c.Warnings = append(c.Warnings, fmt.Sprintf(
			"secret_key is shorter than %d bytes: use a long random secret", MinSecretKeyLen))
	}

	subject := p.get.Get("subject")
	if strings.TrimSpace(subject) == "" {
		subject = DefaultSubject
	}
	tmpl, err := ParseTemplate(subject)
	if err != nil {
		p.fail("subject", subject, "%v", err)
	}
	c.Subject = tmpl

	c.TLSCAFile = p.value("tls_ca_file")
	if c.TLSCAFile != "" {
		c.TLSCAPEM = p.caFile("tls_ca_file", c.TLSCAFile)
	}
	c.TLSServerName = p.value("tls_server_name")
	if c.TLSServerName == "" {
		c.TLSServerName = c.Host
	} else if !validHostName(c.TLSServerName) && net.ParseIP(c.TLSServerName) == nil {
		p.fail("tls_server_name", c.TLSServerName, "is not a valid host name")
	}
	if !c.TLSVerify {
		c.Warnings = append(c.Warnings,
			"tls_verify is false: the server's certificate is NOT verified; anyone on the path can read and alter these emails")
	}

	c.Timeout = p.duration("timeout", DefaultTimeout)
	c.HeloName = p.value("helo_name")
	if c.HeloName != "" && !validHostName(c.HeloName) && !validAddressLiteral(c.HeloName) {
		p.fail("helo_name", c.HeloName, "must be a host name or an address literal such as [192.0.2.1]")
	}

	c.JSONDateKey = DefaultJSONDateKey
	if v := p.value("json_date_key"); v != "" {
		if b, ok := parseBool(v); ok && !b {
			c.JSONDateKey = ""
		} else {
			c.JSONDateKey = v
		}
	}

	maxConns := DefaultMaxConnections
	if pr, ok := ProviderFor(c.Host); ok {
		c.Provider, maxConns = pr.Name, pr.MaxConnections
	}
	c.MaxConnections = p.integer("max_connections", maxConns, 1, MaxConnectionsLimit)
	c.QuotaPause = p.duration("quota_pause", DefaultQuotaPause)
	c.DisablePipelining = !p.boolean("pipelining", true)
	c.DisableChunking = !p.boolean("chunking", true)
	c.PipelineDepth = p.integer("pipeline_depth", DefaultPipelineDepth, 1, MaxPipelineDepth)

	c.DeadLetterDir = p.value("dead_letter_dir")
	if c.DeadLetterDir != "" {
		if fi, err := os.Stat(c.DeadLetterDir); err != nil {
			p.fail("dead_letter_dir", c.DeadLetterDir, "cannot be used: %v", unwrapPathError(err))
		} else if !fi.IsDir() {
			p.fail("dead_letter_dir", c.DeadLetterDir, "is not a directory")
		}
	}
	c.DeadLetterMaxSize = p.size("dead_letter_max_size", DefaultDeadLetterMaxSize)
	c.MaxEmailsPerMinute = p.integer("max_emails_per_minute", 0, 0, 1_000_000)
	p.parseDurability(&c.Durability)        // config/ledger.go
	p.parseDigests(&c.Digests, &c.Warnings) // config/digest.go

	if len(p.errs) > 0 {
		return c, errors.Join(p.errs...)
	}
	return c, nil
}

// parseBool accepts what Fluent Bit core accepts: true/false, on/off, yes/no in any case.
func parseBool(v string) (value, ok bool) {
	switch strings.ToLower(v) {
	case "true", "on", "yes":
		return true, true
	case "false", "off", "no":
		return false, true
	}
	return false, false
}

func (p *parser) boolean(key string, def bool) bool {
	v := p.value(key)
	if v == "" {
		return def
	}
	b, ok := parseBool(v)
	if !ok {
		p.fail(key, v, "is not a boolean: use true/false, on/off or yes/no")
		return def
	}
	return b
}

func (p *parser) integer(key string, def, min, max int) int {
	v := p.value(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		p.fail(key, v, "must be a whole number from %d to %d", min, max)
		return def
	}
	return n
}

// size parses Fluent Bit size syntax: a number of bytes with an optional K, M or G suffix
// (KB, MB, GB too, any case), powers of 1024.
func (p *parser) size(key string, def int64) int64 {
	v := p.value(key)
	if v == "" {
		return def
	}
	n, err := parseSize(v)
	if err != nil || n <= 0 {
		p.fail(key, v, "is not a positive size such as 500K, 100M or 1G")
		return def
	}
	return n
}

func parseSize(v string) (int64, error) {
	s := strings.ToUpper(strings.TrimSuffix(strings.ToUpper(v), "B"))
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, err
	}
	if n > (1<<62)/mult {
		return 0, errors.New("too large")
	}
	return n * mult, nil
}

// duration parses Fluent Bit time syntax: a bare number of seconds, or a number with a unit
// (ms, s, m, h, d; Go duration syntax such as 1m30s also works).
func (p *parser) duration(key string, def time.Duration) time.Duration {
	v := p.value(key)
	if v == "" {
		return def
	}
	d, err := parseDuration(v)
	if err != nil || d <= 0 {
		p.fail(key, v, "is not a positive duration such as 30, 10s, 2m or 1h")
		return def
	}
	return d
}

func parseDuration(v string) (time.Duration, error) {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Duration(n * float64(time.Second)), nil
	}
	if v = strings.ToLower(v); strings.HasSuffix(v, "d") {
		n, err := strconv.ParseFloat(strings.TrimSuffix(v, "d"), 64)
		if err != nil {
			return 0, err
		}
		return time.Duration(n * 24 * float64(time.Hour)), nil
	}
	return time.ParseDuration(v)
}

// hostPort parses dest_host: host, host:port, IPv4:port, [IPv6]:port or a bare IPv6 address.
func (p *parser) hostPort(key string, startTLS bool) (string, int) {
	v := p.value(key)
	defPort := DefaultPortTLS
	if startTLS {
		defPort = DefaultPortSTARTTLS
	}
	if v == "" {
		p.fail(key, v, "is required: the SMTP server's host name or address, optionally with :port")
		return "", defPort
	}
	host, portText := v, ""
	switch {
	case strings.HasPrefix(v, "["):
		end := strings.Index(v, "]")
		if end < 0 {
			p.fail(key, v, "has an unterminated [ in an IPv6 address")
			return "", defPort
		}
		host = v[1:end]
		rest := v[end+1:]
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				p.fail(key, v, "has unexpected text after ]")
				return "", defPort
			}
			portText = rest[1:]
			if portText == "" {
				p.fail(key, v, "has an empty port")
				return "", defPort
			}
		}
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil && !strings.Contains(host, ":") {
			p.fail(key, v, "has %q in brackets, which is not an IPv6 address", host)
			return "", defPort
		}
	case strings.Count(v, ":") > 1:
		if net.ParseIP(v) == nil {
			p.fail(key, v, "is not a host, host:port or [IPv6]:port")
			return "", defPort
		}
	case strings.Contains(v, ":"):
		i := strings.LastIndex(v, ":")
		host, portText = v[:i], v[i+1:]
		if portText == "" {
			p.fail(key, v, "has an empty port")
			return "", defPort
		}
	}
	if host == "" {
		p.fail(key, v, "has an empty host")
		return "", defPort
	}
	if net.ParseIP(host) == nil && !validHostName(host) {
		p.fail(key, v, "has %q, which is not a valid host name or IP address", host)
		return "", defPort
	}
	port := defPort
	if portText != "" {
		n, err := strconv.Atoi(portText)
		if err != nil || n < 1 || n > 65535 {
			p.fail(key, v, "has port %q: must be a number from 1 to 65535", portText)
			return host, defPort
		}
		port = n
	}
	return host, port
}

// validHostName reports whether s is a DNS host name: dot-separated labels of letters, digits,
// hyphens and underscores, none empty or longer than 63, 253 bytes at most.
func validHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r < unicode.MaxASCII && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')) {
				return false
			}
		}
	}
	return true
}

func validAddressLiteral(s string) bool {
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") {
		return false
	}
	inner := strings.TrimPrefix(s[1:len(s)-1], "IPv6:")
	return net.ParseIP(inner) != nil
}

func joinHostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

func lower(s string) string { return strings.ToLower(s) }

func (p *parser) caFile(key, path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		p.fail(key, path, "cannot be read: %v", unwrapPathError(err))
		return nil
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		p.fail(key, path, "holds no PEM certificate")
		return nil
	}
	return data
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// addressList parses a comma-separated RFC 5322 address list, reporting each bad item.
func (p *parser) addressList(key string, required bool) []mail.Address {
	v := p.value(key)
	if v == "" {
		if required {
			p.fail(key, v, "is required")
		}
		return nil
	}
	if strings.ContainsAny(v, "\r\n\x00") {
		p.fail(key, v, "must not contain CR, LF or NUL")
		return nil
	}
	items, err := splitAddressList(v)
	if err != nil {
		p.fail(key, v, "%v", err)
		return nil
	}
	var out []mail.Address
	ok := true
	for i, item := range items {
		item = strings.TrimSpace(item)
		if item == "" {
			p.fail(key, v, "address %d is empty (a stray comma?)", i+1)
			ok = false
			continue
		}
		a, err := parseAddress(item)
		if err != nil {
			p.fail(key, v, "address %q is not valid: %v", item, err)
			ok = false
			continue
		}
		out = append(out, a)
	}
	if !ok {
		return nil
	}
	return out
}

// parseAddress parses one RFC 5322 mailbox (display name allowed) and checks that it is a
// deliverable address: one local part, one @, a domain of host-name labels or an address literal.
func parseAddress(s string) (mail.Address, error) {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return mail.Address{}, errors.New(strings.TrimPrefix(err.Error(), "mail: "))
	}
	at := strings.LastIndex(a.Address, "@")
	if at <= 0 || at == len(a.Address)-1 {
		return mail.Address{}, errors.New("missing local part or domain")
	}
	domain := a.Address[at+1:]
	if !validHostName(domain) && !validAddressLiteral(domain) && !validUnicodeDomain(domain) {
		return mail.Address{}, fmt.Errorf("domain %q is not a valid host name", domain)
	}
	return *a, nil
}

// validUnicodeDomain accepts internationalised domain names (letters beyond ASCII) with the same
// label rules as host names.
func validUnicodeDomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return false
		}
		for _, r := range label {
			if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || unicode.Is(unicode.Mn, r)) {
				return false
			}
		}
	}
	return true
}

// splitAddressList splits at top-level commas, honouring quoted strings (with backslash
// escapes), angle brackets and parenthesised comments.
func splitAddressList(s string) ([]string, error) {
	var items []string
	var quoted, escaped bool
	angle, comment, start := 0, 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if escaped {
			escaped = false
			continue
		}
		switch {
		case c == '\\' && (quoted || comment > 0):
			escaped = true
		case quoted:
			if c == '"' {
				quoted = false
			}
		case c == '"':
			quoted = true
		case c == '(':
			comment++
		case c == ')' && comment > 0:
			comment--
		case comment > 0:
		case c == '<':
			if angle > 0 {
				return nil, errors.New("nested < in an address")
			}
			angle++
		case c == '>':
			if angle == 0 {
				return nil, errors.New("> without a matching <")
			}
			angle--
		case c == ',' && angle == 0:
			items = append(items, s[start:i])
			start = i + 1
		}
	}
	switch {
	case quoted:
		return nil, errors.New("unterminated quoted display name")
	case angle > 0:
		return nil, errors.New("unterminated < in an address")
	case comment > 0:
		return nil, errors.New("unterminated ( comment")
	}
	return append(items, s[start:]), nil
}
