package main

import (
	"bytes"
	"io"
	"mime/quotedprintable"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/output"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

func TestSendDryRun(t *testing.T) {
	dir := t.TempDir()
	conf := writeFile(t, dir, "fb.conf", outputConf("127.0.0.1:1"))
	r := runCmd(t, nil, "", "send", "-c", conf, "--dry-run", "--tag", "app.test",
		"--time", "2026-11-27T10:00:00Z", "--record", `{"msg":"hello","n":42,"f":1.5,"nested":{"a":[1,"x"]}}`)
	if r.code != exitOK {
		t.Fatalf("send --dry-run = %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	head, body, _ := strings.Cut(r.stdout, "\r\n\r\n")
	for _, want := range []string{"X-Fluent-Tag: app.test", "X-Smtpout-Signature: sha256=", "Date: Fri, 27 Nov 2026 10:00:00 +0000"} {
		if !strings.Contains(head, want) {
			t.Errorf("the rendered message's header lacks %q:\n%s", want, head)
		}
	}
	payload, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(body)))
	if err != nil {
		t.Fatalf("body is not quoted-printable: %v", err)
	}
	// Numbers stay numbers (int64 and float64, as from msgpack), nesting is kept.
	if want := `{"date":"2026-11-27T10:00:00Z","f":1.5,"msg":"hello","n":42,"nested":{"a":[1,"x"]}}`; string(payload) != want {
		t.Errorf("payload = %s, want %s", payload, want)
	}
	if !regexp.MustCompile(`record 1 <[0-9a-f]{32}@corp\.com>: rendered, \d+ bytes, not sent`).MatchString(r.stderr) {
		t.Errorf("stderr lacks the record line:\n%s", r.stderr)
	}
	// The message verifies with the output's secret: feed it to verify.
	v := runCmd(t, map[string]string{"S": testSecret}, r.stdout, "verify", "--secret-env", "S")
	if v.code != exitOK || !strings.Contains(v.stdout, "(stdin): ok") {
		t.Errorf("verify of the dry-run message = %d: %s%s", v.code, v.stdout, v.stderr)
	}
	assertNoSecrets(t, r, testSecret)
}

func TestSendBadInput(t *testing.T) {
	dir := t.TempDir()
	conf := writeFile(t, dir, "fb.conf", outputConf("127.0.0.1:1"))
	badConf := writeFile(t, dir, "bad.conf", outputConf("127.0.0.1:1", "is_readable perhaps"))
	ndjson := writeFile(t, dir, "records.ndjson", "{\"a\":1}\n\n[1,2]\n")
	tests := []struct {
		args     []string
		wantCode int
		out      string
	}{
		{[]string{"--record", "[1]"}, exitUsage, "--record: a record must be a JSON object"},
		{[]string{"--record", "{"}, exitUsage, "--record: not JSON"},
		{[]string{"--time", "yesterday"}, exitUsage, `--time "yesterday": want RFC 3339`},
		{[]string{"--file", ndjson}, exitFail, "--file: line 3: a record must be a JSON object"},
		{[]string{"-c", badConf}, exitFail, `FAILED smtp.0: invalid configuration (run smtpout check):`},
	}
	for _, tc := range tests {
		args := append([]string{"send", "-c", conf}, tc.args...)
		r := runCmd(t, nil, "", args...)
		if r.code != tc.wantCode || !strings.Contains(r.stdout+r.stderr, tc.out) {
			t.Errorf("send %q = %d, output %q; want %d with %q", tc.args, r.code, r.stdout+r.stderr, tc.wantCode, tc.out)
		}
	}
}

func TestSend(t *testing.T) {
	cert := testcert.New(t)
	trust := []string{"tls_ca_file " + cert.CAFile, "tls_server_name localhost", "username alerts", "password " + testPassword}

	t.Run("every recipient accepts", func(t *testing.T) {
		srv := startServer(t, serverOptions{tls: cert.ServerTLS(), implicit: true, user: "alerts", pass: testPassword})
		dir := t.TempDir()
		conf := writeFile(t, dir, "fb.conf", outputConf(srv.Addr, trust...))
		records := writeFile(t, dir, "r.ndjson", `{"msg":"first"}`+"\n"+`{"msg":"second"}`+"\n")
		r := runCmd(t, nil, "", "send", "-c", conf, "--file", records, "--tag", "app.send")
		if r.code != exitOK {
			t.Fatalf("send = %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		re := regexp.MustCompile(`record (\d) <[0-9a-f]{32}@corp\.com>: delivered\n  soc@corp\.com: accepted\n  oncall@corp\.com: accepted\n`)
		if got := re.FindAllStringSubmatch(r.stdout, -1); len(got) != 2 {
			t.Errorf("want 2 delivered records with both recipients accepted; stdout:\n%s", r.stdout)
		}
		msgs := srv.messages()
		if len(msgs) != 2 {
			t.Fatalf("server received %d messages, want 2", len(msgs))
		}
		var payloads []string
		for _, m := range msgs {
			if err := output.Verify(bytes.NewReader(m), []byte(testSecret)); err != nil {
				t.Errorf("a delivered message does not verify: %v", err)
			}
			switch {
			case bytes.Contains(m, []byte(`"msg":"first"`)):
				payloads = append(payloads, "first")
			case bytes.Contains(m, []byte(`"msg":"second"`)):
				payloads = append(payloads, "second")
			}
		}
		sort.Strings(payloads) // the mailer may use several connections: any order
		if diff := cmp.Diff([]string{"first", "second"}, payloads); diff != "" {
			t.Errorf("delivered payloads (-want +got):\n%s", diff)
		}
		assertNoSecrets(t, r, testSecret, testPassword)
	})

	t.Run("one recipient rejected", func(t *testing.T) {
		srv := startServer(t, serverOptions{tls: cert.ServerTLS(), implicit: true, user: "alerts", pass: testPassword,
			reject: map[string]string{"oncall@corp.com": "mailbox unavailable"}})
		conf := writeFile(t, t.TempDir(), "fb.conf", outputConf(srv.Addr, trust...))
		r := runCmd(t, nil, "", "send", "-c", conf, "--record", `{"msg":"x"}`)
		if r.code != exitFail {
			t.Errorf("send with a rejected recipient = %d, want %d", r.code, exitFail)
		}
		assertInOrder(t, r.stdout, []string{
			": delivered", "  soc@corp.com: accepted", "  oncall@corp.com: rejected 550 5.1.1", "mailbox unavailable",
			"1 of 1 record(s) not delivered to every recipient",
		})
		if n := len(srv.messages()); n != 1 {
			t.Errorf("server received %d messages, want 1", n)
		}
	})

	t.Run("every recipient rejected", func(t *testing.T) {
		srv := startServer(t, serverOptions{tls: cert.ServerTLS(), implicit: true, user: "alerts", pass: testPassword,
			reject: map[string]string{"oncall@corp.com": "no such user", "soc@corp.com": "no such user"}})
		conf := writeFile(t, t.TempDir(), "fb.conf", outputConf(srv.Addr, trust...))
		r := runCmd(t, nil, "", "send", "-c", conf)
		if r.code != exitFail {
			t.Errorf("send = %d, want %d", r.code, exitFail)
		}
		assertInOrder(t, r.stdout, []string{"record 1 <", ">: rejected (permanent; Fluent Bit would not retry)", "550"})
	})

	t.Run("wrong password is a retry", func(t *testing.T) {
		srv := startServer(t, serverOptions{tls: cert.ServerTLS(), implicit: true, user: "alerts", pass: "something-else-entirely"})
		conf := writeFile(t, t.TempDir(), "fb.conf", outputConf(srv.Addr, trust...))
		r := runCmd(t, nil, "", "send", "-c", conf)
		if r.code != exitFail {
			t.Errorf("send = %d, want %d", r.code, exitFail)
		}
		assertInOrder(t, r.stdout, []string{"record 1 <", ">: retry (temporary; Fluent Bit would try again)"})
		assertNoSecrets(t, r, testSecret, testPassword)
	})
}
