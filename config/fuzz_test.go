package config

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary text to the address, host, boolean, duration and subject keys.
// Parse must never panic; every error must be a *KeyError naming a key Parse reads and
// never containing the password or secret_key; an accepted configuration must be usable.
func FuzzParse(f *testing.F) {
	seeds := [][6]string{
		{"smtp.example.com", "soc@corp.com", "lc@corp.com", "true", "Fluent Bit: $TAG", "30s"},
		{"[2001:db8::1]:587", `SOC <soc@corp.com>, "Doe, John" <jd@corp.com>`, "A <a@x.com>", "on", "$TAG[1] $a['b']['c']", "2m"},
		{"host:99999", "a@x.com,,b@y.com", "a@x.com, b@x.com", "maybe", "$TAG[", "-1"},
		{"[::1", "SOC <soc@corp.com", "\"unterminated", "YES", "$k['a'", "1d"},
		{"exa mple.com", "user@exa mple.com", "@x", "", "$$ $", "500ms"},
		{"10.0.0.1:25", "(comment) a@x.com", "<a@x.com>", "No", "$a[\"b\"]", "1.5"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5])
	}
	const password, secret = "fuzz-password-VALUE", "fuzz-secret-key-VALUE"
	known := make(map[string]bool)
	for _, k := range Keys {
		known[k] = true
	}
	f.Fuzz(func(t *testing.T, host, to, from, boolean, subject, timeout string) {
		c, err := Parse(MapGetter{
			"dest_host": host, "dest_email": to, "cc_email": to, "bcc_email": from, "from_email": from,
			"is_readable": boolean, "is_starttls": boolean, "tls_verify": boolean,
			"subject": subject, "timeout": timeout, "helo_name": host,
			"username": "user", "password": password, "secret_key": secret,
		})
		if err != nil {
			if strings.Contains(err.Error(), password) || strings.Contains(err.Error(), secret) {
				t.Fatalf("a secret appears in the error: %q", err)
			}
			var walk func(error)
			walk = func(e error) {
				if j, ok := e.(interface{ Unwrap() []error }); ok {
					for _, x := range j.Unwrap() {
						walk(x)
					}
					return
				}
				var ke *KeyError
				if !errors.As(e, &ke) || !known[ke.Key] {
					t.Fatalf("error %q is not a *KeyError naming a known key", e)
				}
			}
			walk(err)
			return
		}
		if c.Host == "" || c.Port < 1 || c.Port > 65535 || len(c.To) == 0 || !strings.Contains(c.From.Address, "@") ||
			c.Timeout <= 0 || len(c.Recipients()) == 0 {
			t.Fatalf("accepted an unusable configuration: %+v", c)
		}
		for _, a := range append(append([]string{c.From.Address, c.Host, c.HeloName}, c.Recipients()...), c.From.Name) {
			if strings.ContainsAny(a, "\r\n\x00") {
				t.Fatalf("accepted CR, LF or NUL in %q", a)
			}
		}
		if len(c.Subject.Tokens) == 0 && subject != "" && strings.TrimSpace(subject) != "" {
			t.Fatalf("subject %q parsed to no tokens", subject)
		}
	})
}
