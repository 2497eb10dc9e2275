package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const (
	testPassword = "hunter2-PASSWORD-value"
	testSecret   = "this-is-my-secret-shared-key"
)

// base is a minimal valid configuration; tests override keys in it.
func base(overrides map[string]string) MapGetter {
	m := MapGetter{
		"dest_host":  "smtp.example.com",
		"dest_email": "soc@corp.com",
		"from_email": "lc@corp.com",
		"secret_key": testSecret,
	}
	for k, v := range overrides {
		if v == "<unset>" {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	return m
}

func addr(name, a string) mail.Address { return mail.Address{Name: name, Address: a} }

func mustTemplate(t *testing.T, s string) Template {
	t.Helper()
	tm, err := ParseTemplate(s)
	if err != nil {
		t.Fatalf("ParseTemplate(%q): %v", s, err)
	}
	return tm
}

func TestParseDefaults(t *testing.T) {
	got, err := Parse(base(nil))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Config{
		DeadLetterMaxSize: DefaultDeadLetterMaxSize,
		Host:              "smtp.example.com",
		Port:              465,
		To:                []mail.Address{addr("", "soc@corp.com")},
		From:              addr("", "lc@corp.com"),
		SecretKey:         Secret(testSecret),
		AuthMechanism:     MechPlain,
		Subject:           Template{Raw: "Fluent Bit: $TAG", Tokens: []Token{{Kind: Literal, Text: "Fluent Bit: "}, {Kind: TagToken}}},
		TLSVerify:         true,
		TLSServerName:     "smtp.example.com",
		Timeout:           30 * time.Second,
		JSONDateKey:       "date",
		MaxConnections:    4,
		QuotaPause:        time.Minute,
		PipelineDepth:     1, // issue 22: a SIGKILL repeats at most max_connections emails
		Durability: Durability{
			LedgerMaxEntries: 100_000,
			LedgerMaxAge:     24 * time.Hour,
			FlushTimeout:     3 * time.Second,
		},
		Digests: Digests{DigestMaxRecords: 1000},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse() (-want +got):\n%s", diff)
	}
}

func TestParseSeedExample(t *testing.T) {
	// The spec's own example, key for key.
	got, err := Parse(MapGetter{
		"dest_host":    "smtp.gmail.com",
		"dest_email":   "soc@corp.com",
		"from_email":   "lc@corp.com",
		"username":     "lc",
		"password":     "password-for-my-lc-email-user",
		"secret_key":   "this-is-my-secret-shared-key",
		"is_readable":  "true",
		"is_starttls":  "false",
		"is_authlogin": "false",
		"subject":      "LC Detection- <Name>",
	})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got.Host != "smtp.gmail.com" || got.Port != 465 || !got.Readable || got.StartTLS || got.AuthLogin ||
		got.Username != "lc" || got.Password.Reveal() != "password-for-my-lc-email-user" {
		t.Errorf("Parse(seed example) = %+v", got)
	}
	want := Template{Raw: "LC Detection- <Name>", Tokens: []Token{{Kind: Literal, Text: "LC Detection- <Name>"}}}
	if diff := cmp.Diff(want, got.Subject); diff != "" {
		t.Errorf("subject (-want +got):\n%s", diff)
	}
}

func TestParseHost(t *testing.T) {
	tests := []struct {
		in       string
		starttls string
		host     string
		port     int
	}{
		{"smtp.example.com", "", "smtp.example.com", 465},
		{"smtp.example.com", "true", "smtp.example.com", 587},
		{"smtp.example.com:2525", "", "smtp.example.com", 2525},
		{"smtp.example.com:25", "yes", "smtp.example.com", 25},
		{"192.0.2.10", "", "192.0.2.10", 465},
		{"192.0.2.10:1", "", "192.0.2.10", 1},
		{"192.0.2.10:65535", "", "192.0.2.10", 65535},
		{"[2001:db8::1]:587", "", "2001:db8::1", 587},
		{"[::1]", "on", "::1", 587},
		{"2001:db8::1", "", "2001:db8::1", 465},
		{"  mail_relay.corp.internal  ", "", "mail_relay.corp.internal", 465},
		{"localhost", "", "localhost", 465},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(base(map[string]string{"dest_host": tc.in, "is_starttls": tc.starttls}))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff([2]any{tc.host, tc.port}, [2]any{got.Host, got.Port}); diff != "" {
				t.Errorf("host, port (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseHostRejected(t *testing.T) {
	for _, in := range []string{
		"<unset>", "   ", "smtp.example.com:", "smtp.example.com:0", "smtp.example.com:65536",
		"smtp.example.com:smtp", "smtp.example.com:-1", ":25", "[2001:db8::1", "[2001:db8::1]x",
		"[192.0.2.1]:25", "[not-an-ip]:25", "smtp example.com", "smtp.example.com:25:26x", "-bad.example.com",
		"exa$mple.com", "[::1]:",
	} {
		t.Run(in, func(t *testing.T) {
			_, err := Parse(base(map[string]string{"dest_host": in}))
			assertKeyError(t, err, "dest_host")
		})
	}
}

// assertKeyError checks that err holds a *KeyError for key and that its text names the key.
func assertKeyError(t *testing.T, err error, key string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Parse: no error, want one naming %s", key)
	}
	for _, ke := range keyErrors(err) {
		if ke.Key == key {
			if !strings.HasPrefix(ke.Error(), key+":") {
				t.Errorf("error %q does not start with the key %q", ke.Error(), key)
			}
			return
		}
	}
	t.Fatalf("Parse error %q names no %s", err, key)
}

func keyErrors(err error) []*KeyError {
	var out []*KeyError
	var walk func(error)
	walk = func(e error) {
		if ke, ok := e.(*KeyError); ok {
			out = append(out, ke)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
		}
	}
	walk(err)
	return out
}

func TestParseAddresses(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []mail.Address
	}{
		{"one", "soc@corp.com", []mail.Address{addr("", "soc@corp.com")}},
		{"two", "soc@corp.com, oncall@corp.com", []mail.Address{addr("", "soc@corp.com"), addr("", "oncall@corp.com")}},
		{"display name", "SOC <soc@corp.com>", []mail.Address{addr("SOC", "soc@corp.com")}},
		{"quoted comma", `SOC <soc@corp.com>, "Doe, John" <jd@corp.com>`,
			[]mail.Address{addr("SOC", "soc@corp.com"), addr("Doe, John", "jd@corp.com")}},
		{"whitespace", "  a@x.com ,\tb@y.com  ", []mail.Address{addr("", "a@x.com"), addr("", "b@y.com")}},
		{"angle only", "<a@x.com>", []mail.Address{addr("", "a@x.com")}},
		{"unicode name", "Sécurité <sec@corp.com>", []mail.Address{addr("Sécurité", "sec@corp.com")}},
		{"escaped quote", `"Ops \"On Call\"" <oc@corp.com>`, []mail.Address{addr(`Ops "On Call"`, "oc@corp.com")}},
		{"plus and dots", "first.last+alerts@sub.corp.co.uk", []mail.Address{addr("", "first.last+alerts@sub.corp.co.uk")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, key := range []string{"dest_email", "cc_email", "bcc_email"} {
				got, err := Parse(base(map[string]string{key: tc.in}))
				if err != nil {
					t.Fatalf("%s: Parse: %v", key, err)
				}
				field := map[string][]mail.Address{"dest_email": got.To, "cc_email": got.Cc, "bcc_email": got.Bcc}[key]
				if diff := cmp.Diff(tc.want, field); diff != "" {
					t.Errorf("%s (-want +got):\n%s", key, diff)
				}
			}
		})
	}
}

func TestParseAddressesRejected(t *testing.T) {
	tests := []struct {
		in      string
		mention string // the bad item, named in the error
	}{
		{"a@x.com,,b@y.com", "address 2 is empty"},
		{"a@x.com,", "address 2 is empty"},
		{",a@x.com", "address 1 is empty"},
		{"noatsign", `"noatsign"`},
		{"user@", `"user@"`},
		{"@x.com", `"@x.com"`},
		{"SOC <soc@corp.com", "unterminated <"},
		{"soc@corp.com>", "without a matching <"},
		{"user@exa mple.com", `"user@exa mple.com"`},
		{"a b@x.com", `"a b@x.com"`},
		{"good@x.com, bad@", `"bad@"`},
		{`"Doe, John <jd@corp.com>`, "unterminated quoted"},
		{"a@x.com\r\nBcc: evil@x.com", "CR, LF"},
		{"a@-x.com", `"a@-x.com"`},
		{"undisclosed-recipients:;", "undisclosed-recipients"},
	}
	for _, tc := range tests {
		for _, key := range []string{"dest_email", "cc_email", "bcc_email", "from_email"} {
			t.Run(key+"/"+tc.in, func(t *testing.T) {
				_, err := Parse(base(map[string]string{key: tc.in}))
				assertKeyError(t, err, key)
				if !strings.Contains(err.Error(), tc.mention) {
					t.Errorf("error %q does not mention %q", err, tc.mention)
				}
			})
		}
	}
}

func TestParseRequired(t *testing.T) {
	for _, key := range []string{"dest_host", "dest_email", "from_email", "secret_key"} {
		t.Run(key, func(t *testing.T) {
			_, err := Parse(base(map[string]string{key: "<unset>"}))
			assertKeyError(t, err, key)
			if !strings.Contains(err.Error(), "required") {
				t.Errorf("error %q does not say the key is required", err)
			}
		})
	}
}

func TestParseFromExactlyOne(t *testing.T) {
	_, err := Parse(base(map[string]string{"from_email": "a@x.com, b@x.com"}))
	assertKeyError(t, err, "from_email")
	got, err := Parse(base(map[string]string{"from_email": `"LimaCharlie, Alerts" <lc@corp.com>`}))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if diff := cmp.Diff(addr("LimaCharlie, Alerts", "lc@corp.com"), got.From); diff != "" {
		t.Errorf("From (-want +got):\n%s", diff)
	}
}

func TestRecipientsDeduplicated(t *testing.T) {
	got, err := Parse(base(map[string]string{
		"dest_email": "soc@corp.com, oncall@corp.com",
		"cc_email":   "SOC Team <SOC@corp.com>, manager@corp.com",
		"bcc_email":  "audit@corp.com, oncall@corp.com, manager@CORP.com",
	}))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []string{"soc@corp.com", "oncall@corp.com", "manager@corp.com", "audit@corp.com"}
	if diff := cmp.Diff(want, got.Recipients()); diff != "" {
		t.Errorf("Recipients() (-want +got):\n%s", diff)
	}
}

func TestParseBooleans(t *testing.T) {
	keys := []string{"is_readable", "is_starttls", "is_authlogin", "tls_verify", "pipelining", "chunking"}
	get := func(c Config, key string) bool {
		return map[string]bool{"is_readable": c.Readable, "is_starttls": c.StartTLS, "is_authlogin": c.AuthLogin, "tls_verify": c.TLSVerify,
			"pipelining": !c.DisablePipelining, "chunking": !c.DisableChunking}[key]
	}
	defaults := map[string]bool{"is_readable": false, "is_starttls": false, "is_authlogin": false, "tls_verify": true, "pipelining": true, "chunking": true}
	accepted := map[string]bool{
		"true": true, "TRUE": true, "True": true, "on": true, "On": true, "yes": true, "YES": true,
		"false": false, "FALSE": false, "off": false, "Off": false, "no": false, "No": false, " true ": true,
	}
	for _, key := range keys {
		t.Run(key+"/default", func(t *testing.T) {
			c, err := Parse(base(nil))
			if err != nil {
				t.Fatal(err)
			}
			if got := get(c, key); got != defaults[key] {
				t.Errorf("default %s = %v, want %v", key, got, defaults[key])
			}
		})
		for in, want := range accepted {
			t.Run(key+"/"+in, func(t *testing.T) {
				c, err := Parse(base(map[string]string{key: in}))
				if err != nil {
					t.Fatal(err)
				}
				if got := get(c, key); got != want {
					t.Errorf("%s=%q -> %v, want %v", key, in, got, want)
				}
			})
		}
		for _, in := range []string{"1", "0", "y", "n", "tru", "enabled", "truee", "ja"} {
			t.Run(key+"/rejected/"+in, func(t *testing.T) {
				_, err := Parse(base(map[string]string{key: in}))
				assertKeyError(t, err, key)
				if !strings.Contains(err.Error(), fmt.Sprintf("%q", in)) {
					t.Errorf("error %q does not quote the value %q", err, in)
				}
			})
		}
	}
}

func TestParseCredentials(t *testing.T) {
	c, err := Parse(base(map[string]string{"username": "lc", "password": testPassword}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Username != "lc" || c.Password.Reveal() != testPassword {
		t.Errorf("credentials not kept: %q", c.Username)
	}
	_, err = Parse(base(map[string]string{"username": "lc"}))
	assertKeyError(t, err, "password")
	_, err = Parse(base(map[string]string{"password": testPassword}))
	assertKeyError(t, err, "username")
}

func TestSecretKeyShortWarns(t *testing.T) {
	c, err := Parse(base(map[string]string{"secret_key": "short"}))
	if err != nil {
		t.Fatalf("a short secret_key must be accepted: %v", err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "secret_key") {
		t.Errorf("Warnings = %q, want one naming secret_key", c.Warnings)
	}
	c, _ = Parse(base(nil))
	if len(c.Warnings) != 0 {
		t.Errorf("Warnings = %q for a long secret, want none", c.Warnings)
	}
}

func TestParseSubject(t *testing.T) {
	tests := []struct {
		in   string
		want []Token
	}{
		{"", []Token{{Kind: Literal, Text: "Fluent Bit: "}, {Kind: TagToken}}},
		{"plain text", []Token{{Kind: Literal, Text: "plain text"}}},
		{"$TAG", []Token{{Kind: TagToken}}},
		{"$TAG[0].$TAG[12]", []Token{{Kind: TagPartToken, Index: 0}, {Kind: Literal, Text: "."}, {Kind: TagPartToken, Index: 12}}},
		{"Alert: $cat on $detect['routing']['hostname']!", []Token{
			{Kind: Literal, Text: "Alert: "}, {Kind: KeyToken, Path: []string{"cat"}}, {Kind: Literal, Text: " on "},
			{Kind: KeyToken, Path: []string{"detect", "routing", "hostname"}}, {Kind: Literal, Text: "!"}}},
		{`$a["b c"]`, []Token{{Kind: KeyToken, Path: []string{"a", "b c"}}}},
		{"cost $$5 $user_name-x", []Token{{Kind: Literal, Text: "cost $5 "}, {Kind: KeyToken, Path: []string{"user_name-x"}}}},
		{"$TAGS", []Token{{Kind: KeyToken, Path: []string{"TAGS"}}}},
		{"$ips[0] $a['b'][12]", []Token{{Kind: KeyToken, Path: []string{"ips", "0"}}, {Kind: Literal, Text: " "},
			{Kind: KeyToken, Path: []string{"a", "b", "12"}}}},
		{"Prix: 5€ $k", []Token{{Kind: Literal, Text: "Prix: 5€ "}, {Kind: KeyToken, Path: []string{"k"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			c, err := Parse(base(map[string]string{"subject": tc.in}))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, c.Subject.Tokens); diff != "" {
				t.Errorf("tokens (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseSubjectRejected(t *testing.T) {
	for _, in := range []string{"$", "a $ b", "$TAG[", "$TAG[x]", "$TAG[-1]", "$k[", "$k['a'", "$k[a]", "$k['a'x", "$k['']", "$.x", "$k[1", "$k[1x]"} {
		t.Run(in, func(t *testing.T) {
			_, err := Parse(base(map[string]string{"subject": in}))
			assertKeyError(t, err, "subject")
		})
	}
}

func TestParseExtensionKeys(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	testCAPEM := selfSignedPEM(t)
	if err := os.WriteFile(ca, []byte(testCAPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Parse(base(map[string]string{
		"tls_verify": "off", "tls_ca_file": ca, "tls_server_name": "mx.corp.com", "timeout": "2m",
		"helo_name": "fluent-1.corp.com", "json_date_key": "@timestamp", "max_connections": "8",
	}))
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.TLSVerify, c.TLSCAFile, string(c.TLSCAPEM), c.TLSServerName, c.Timeout, c.HeloName, c.JSONDateKey, c.MaxConnections, len(c.Warnings)}
	want := []any{false, ca, testCAPEM, "mx.corp.com", 2 * time.Minute, "fluent-1.corp.com", "@timestamp", 8, 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("extension keys (-want +got):\n%s", diff)
	}

	c, err = Parse(base(map[string]string{"dead_letter_dir": dir, "dead_letter_max_size": "5M", "max_emails_per_minute": "120"}))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]any{dir, int64(5 << 20), 120}, []any{c.DeadLetterDir, c.DeadLetterMaxSize, c.MaxEmailsPerMinute}); diff != "" {
		t.Errorf("dead letters and storm guard (-want +got):\n%s", diff)
	}
	for in, want := range map[string]int64{"1024": 1024, "500K": 500 << 10, "500kb": 500 << 10, "100M": 100 << 20, "1G": 1 << 30, "2GB": 2 << 30} {
		c, err := Parse(base(map[string]string{"dead_letter_max_size": in}))
		if err != nil || c.DeadLetterMaxSize != want {
			t.Errorf("dead_letter_max_size %q = %d, %v; want %d", in, c.DeadLetterMaxSize, err, want)
		}
	}

	c, err = Parse(base(map[string]string{"json_date_key": "false"}))
	if err != nil || c.JSONDateKey != "" {
		t.Errorf("json_date_key false: JSONDateKey=%q err=%v, want off", c.JSONDateKey, err)
	}
	for in, want := range map[string]time.Duration{"10": 10 * time.Second, "10s": 10 * time.Second, "1.5": 1500 * time.Millisecond,
		"500ms": 500 * time.Millisecond, "1h": time.Hour, "1d": 24 * time.Hour, "2D": 48 * time.Hour, "1H": time.Hour, "1m30s": 90 * time.Second, "2M": 2 * time.Minute} {
		c, err := Parse(base(map[string]string{"timeout": in}))
		if err != nil || c.Timeout != want {
			t.Errorf("timeout %q = %v, %v; want %v", in, c.Timeout, err, want)
		}
	}
}

func TestParseExtensionKeysRejected(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "x.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string][]string{
		"timeout":               {"0", "-5s", "soon", "10x", "0s"},
		"tls_ca_file":           {filepath.Join(dir, "missing.pem"), notPEM},
		"tls_server_name":       {"bad name", "a..b"},
		"helo_name":             {"bad name", "[not-ip]"},
		"max_connections":       {"0", "65", "four", "-1"},
		"pipeline_depth":        {"0", "65", "sixteen", "-1"},
		"dead_letter_dir":       {filepath.Join(dir, "missing"), notPEM},
		"dead_letter_max_size":  {"0", "-1M", "lots", "1T", "99999999999G"},
		"max_emails_per_minute": {"-1", "many", "1000001"},
	}
	for key, values := range tests {
		for _, v := range values {
			t.Run(key+"/"+v, func(t *testing.T) {
				_, err := Parse(base(map[string]string{key: v}))
				assertKeyError(t, err, key)
			})
		}
	}
}

func TestParseReportsEveryProblemAtOnce(t *testing.T) {
	_, err := Parse(MapGetter{
		"dest_host":    "smtp.example.com:99999",
		"dest_email":   "a@x.com,,b@y.com",
		"cc_email":     "noatsign",
		"from_email":   "a@x.com, b@x.com",
		"is_readable":  "maybe",
		"is_starttls":  "1",
		"is_authlogin": "si",
		"username":     "lc",
		"subject":      "$TAG[",
		"timeout":      "forever",
	})
	var got []string
	for _, ke := range keyErrors(err) {
		got = append(got, ke.Key)
	}
	want := []string{"bcc_email", "cc_email", "dest_email", "dest_host", "from_email", "is_authlogin", "is_readable",
		"is_starttls", "password", "secret_key", "subject", "timeout"}
	// bcc_email is valid (unset); keep the list honest.
	want = want[1:]
	if diff := cmp.Diff(want, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("keys named (-want +got):\n%s\nerror:\n%v", diff, err)
	}
	for _, ke := range keyErrors(err) {
		if !errors.Is(err, ke) {
			t.Errorf("errors.Is(err, %v) = false", ke)
		}
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	inputs := []MapGetter{
		base(map[string]string{"password": testPassword}),                          // username missing
		base(map[string]string{"password": testPassword, "dest_host": "bad host"}), // plus another error
		base(map[string]string{"secret_key": "\r\n" + testSecret}),
		{"password": testPassword, "secret_key": testSecret, "dest_email": testSecret, "username": "u"},
	}
	for i, in := range inputs {
		c, err := Parse(in)
		texts := []string{fmt.Sprint(err), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%v", c.Password), fmt.Sprintf("%q", c.SecretKey),
			cmp.Diff(Config{}, c)}
		texts = append(texts, c.Warnings...)
		for _, txt := range texts {
			if strings.Contains(txt, testPassword) {
				t.Errorf("input %d: password appears in %q", i, txt)
			}
			if strings.Contains(txt, testSecret) && in["dest_email"] != testSecret {
				t.Errorf("input %d: secret_key appears in output", i)
			}
		}
	}
}

func TestConfigAddress(t *testing.T) {
	for in, want := range map[string]string{"h.example.com": "h.example.com:465", "[::1]:2525": "[::1]:2525", "10.0.0.1:25": "10.0.0.1:25"} {
		c, err := Parse(base(map[string]string{"dest_host": in}))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Address(); got != want {
			t.Errorf("Address() for %q = %q, want %q", in, got, want)
		}
	}
}

// selfSignedPEM makes a throwaway self-signed certificate, used only to check that tls_ca_file
// is read and parsed.
func selfSignedPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
