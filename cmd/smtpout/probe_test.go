package main

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/smtpout/smtpout/testsupport/testcert"
)

// outputConf returns a classic configuration with one smtp output; extra lines are appended.
func outputConf(addr string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[OUTPUT]\n    Name smtp\n    Match *\n    dest_host %s\n    dest_email soc@corp.com, oncall@corp.com\n    from_email alerts@corp.com\n    secret_key %s\n", addr, testSecret)
	for _, l := range extra {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

func TestProbe(t *testing.T) {
	cert := testcert.New(t)
	other := testcert.New(t) // a CA the servers do not use
	implicit := startServer(t, serverOptions{tls: cert.ServerTLS(), implicit: true, user: "alerts", pass: testPassword})
	starttls := startServer(t, serverOptions{tls: cert.ServerTLS(), user: "alerts", pass: testPassword})
	noAuth := startServer(t, serverOptions{tls: cert.ServerTLS(), implicit: true})
	plain := startServer(t, serverOptions{}) // no TLS at all

	// A port with nothing listening: listen, note the port, close.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	trust := []string{"tls_ca_file " + cert.CAFile, "tls_server_name localhost"}
	creds := []string{"username alerts", "password " + testPassword}
	with := func(lists ...[]string) []string {
		var out []string
		for _, l := range lists {
			out = append(out, l...)
		}
		return out
	}
	tests := []struct {
		name     string
		conf     string
		wantCode int
		want     []string
	}{
		{"implicit TLS with AUTH PLAIN", outputConf(implicit.Addr, with(trust, creds)...), 0, []string{
			"probe smtp.0: " + implicit.Addr + " (implicit TLS)",
			"tls:         TLS 1.3, TLS_",
			`certificate: subject "CN=localhost"`, `issuer "CN=smtpout test CA"`,
			"expires:", "verified:    yes, for \"localhost\"",
			"extensions:  SIZE 10485760, PIPELINING", "CHUNKING",
			"auth offers: PLAIN LOGIN",
			"auth:        PLAIN as alerts: accepted",
			"OK smtp.0",
		}},
		{"STARTTLS with AUTH LOGIN", outputConf(starttls.Addr, with(trust, creds, []string{"is_starttls true", "is_authlogin on"})...), 0, []string{
			"(STARTTLS)", "tls:         TLS 1.3", "auth:        LOGIN as alerts: accepted", "OK smtp.0",
		}},
		{"no credentials configured: no AUTH attempted", outputConf(noAuth.Addr, trust...), 0, []string{
			"auth offers: none offered", "auth:        not configured", "OK smtp.0",
		}},
		{"wrong password", outputConf(implicit.Addr, with(trust, []string{"username alerts", "password not-the-password"})...), 1, []string{
			"FAILED smtp.0: smtp AUTH " + implicit.Addr + ": 535 5.7.8", "hint: authentication failed: check username/password",
		}},
		{"credentials but the server offers no AUTH", outputConf(noAuth.Addr, with(trust, creds)...), 1, []string{
			"FAILED smtp.0: smtp AUTH " + noAuth.Addr + ": server offers no AUTH", "hint: username is set but the server does not offer authentication",
		}},
		{"untrusted certificate", outputConf(implicit.Addr, "tls_ca_file "+other.CAFile, "tls_server_name localhost"), 1, []string{
			"FAILED smtp.0: smtp TLS " + implicit.Addr + ": ", "hint: the server certificate is signed by an unknown authority: set tls_ca_file",
		}},
		{"wrong name", outputConf(implicit.Addr, "tls_ca_file "+cert.CAFile, "tls_server_name mail.example.org"), 1, []string{
			"FAILED smtp.0: smtp TLS ", `hint: the server certificate is not valid for "mail.example.org": set tls_server_name`,
		}},
		{"implicit TLS to a STARTTLS port", outputConf(starttls.Addr, trust...), 1, []string{
			"FAILED smtp.0: smtp TLS ", "hint: the server speaks plaintext SMTP first: set is_starttls true",
		}},
		{"STARTTLS to an implicit TLS port", outputConf(implicit.Addr, with(trust, []string{"is_starttls true", "timeout 1s"})...), 1, []string{
			"FAILED smtp.0: smtp greeting ", "hint: no SMTP greeting: the port may expect implicit TLS; set is_starttls false",
		}},
		{"server without STARTTLS", outputConf(plain.Addr, with(trust, []string{"is_starttls true"})...), 1, []string{
			"FAILED smtp.0: smtp STARTTLS " + plain.Addr + ": server does not offer STARTTLS", "hint: is_starttls is true and TLS is mandatory",
		}},
		{"nothing listening", outputConf(closed, trust...), 1, []string{
			"FAILED smtp.0: smtp dial " + closed + ": ", "hint: nothing listens on " + closed,
		}},
		{"invalid configuration", outputConf(implicit.Addr, "is_starttls perhaps"), 1, []string{
			"FAILED smtp.0: invalid configuration", `is_starttls: "perhaps": is not a boolean`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "fb.conf", tc.conf)
			r := runCmd(t, nil, "", "probe", "-c", path)
			if r.code != tc.wantCode {
				t.Errorf("exit code = %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tc.wantCode, r.stdout, r.stderr)
			}
			assertInOrder(t, r.stdout, tc.want)
			assertNoSecrets(t, r, testSecret, testPassword)
		})
	}
	if n := len(implicit.messages()) + len(starttls.messages()) + len(noAuth.messages()); n != 0 {
		t.Errorf("probe sent %d message(s); it must send none", n)
	}
}

func TestProbeSelectsOutput(t *testing.T) {
	cert := testcert.New(t)
	srv := startServer(t, serverOptions{tls: cert.ServerTLS(), implicit: true})
	conf := outputConf("127.0.0.1:1", "alias broken") +
		outputConf(srv.Addr, "alias ops", "tls_ca_file "+cert.CAFile, "tls_server_name localhost")
	path := writeFile(t, t.TempDir(), "fb.conf", conf)

	r := runCmd(t, nil, "", "probe", "-c", path)
	if r.code != exitFail || !strings.Contains(r.stdout, "2 outputs match; choose one with --output (broken, ops)") {
		t.Errorf("probe without --output = %d:\n%s", r.code, r.stdout)
	}
	for _, sel := range []string{"ops", "smtp.1", "1"} {
		r = runCmd(t, nil, "", "probe", "-c", path, "--output", sel)
		if r.code != exitOK || !strings.Contains(r.stdout, "OK ops: ") {
			t.Errorf("probe --output %s = %d:\n%s", sel, r.code, r.stdout)
		}
	}
}
