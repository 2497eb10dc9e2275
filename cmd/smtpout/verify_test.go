package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/output"
)

// testRenderer returns the plugin's renderer for a minimal configuration.
func testRenderer(t *testing.T, secret string, readable bool) *output.Renderer {
	t.Helper()
	cfg, err := config.Parse(config.MapGetter{
		"dest_host": "smtp.corp.com", "dest_email": "soc@corp.com", "from_email": "alerts@corp.com",
		"secret_key": secret, "is_readable": map[bool]string{true: "true", false: "false"}[readable],
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := output.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// renderEmail renders one record with the plugin's renderer.
func renderEmail(t *testing.T, secret string, readable bool, fields map[string]any) []byte {
	t.Helper()
	e, err := testRenderer(t, secret, readable).Render(output.Record{Tag: "app.alerts", Time: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), Fields: fields})
	if err != nil {
		t.Fatal(err)
	}
	return e.Data
}

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	fields := map[string]any{"msg": "intrusion detected on host-17", "severity": int64(9)}
	good := renderEmail(t, testSecret, false, fields)
	readable := renderEmail(t, testSecret, true, fields)
	if !bytes.Contains(good, []byte("host-17")) {
		t.Fatalf("the rendered email does not hold the payload text the test tampers with:\n%s", good)
	}
	tampered := bytes.Replace(good, []byte("host-17"), []byte("host-18"), 1)
	unsigned := dropHeader(t, good, output.SignatureHeader)

	files := map[string]string{
		"good":     writeFile(t, dir, "good.eml", string(good)),
		"readable": writeFile(t, dir, "readable.eml", string(readable)),
		"tampered": writeFile(t, dir, "tampered.eml", string(tampered)),
		"unsigned": writeFile(t, dir, "unsigned.eml", string(unsigned)),
		"missing":  dir + "/missing.eml",
	}
	secretFile := writeFile(t, dir, "secret", testSecret+"\n")
	wrongFile := writeFile(t, dir, "wrong", "another-secret-of-some-length\n")
	conf := writeFile(t, dir, "fb.conf", "[OUTPUT]\n    Name smtp\n    secret_key ${S}\n")
	envVars := map[string]string{"SECRET": testSecret, "S": testSecret}

	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantCode int
		want     []string
	}{
		{"good and readable with --secret-file", []string{"--secret-file", secretFile, files["good"], files["readable"]}, "", 0,
			[]string{files["good"] + ": ok", files["readable"] + ": ok"}},
		{"tampered", []string{"--secret-file", secretFile, files["good"], files["tampered"]}, "", 1,
			[]string{files["good"] + ": ok", files["tampered"] + ": FAILED: signature does not match the payload", "1 of 2 message(s) FAILED"}},
		{"unsigned", []string{"--secret-file", secretFile, files["unsigned"]}, "", 1,
			[]string{files["unsigned"] + ": FAILED: no X-Smtpout-Signature header"}},
		{"wrong secret", []string{"--secret-file", wrongFile, files["good"]}, "", 1,
			[]string{files["good"] + ": FAILED: signature does not match"}},
		{"unreadable file", []string{"--secret-file", secretFile, files["missing"]}, "", 1,
			[]string{files["missing"] + ": FAILED: cannot read: no such file or directory"}},
		{"stdin with --secret-env", []string{"--secret-env", "SECRET"}, string(good), 0,
			[]string{"(stdin): ok"}},
		{"stdin tampered", []string{"--secret-env", "SECRET", "-"}, string(tampered), 1,
			[]string{"(stdin): FAILED: signature does not match"}},
		{"secret from the configuration", []string{"-c", conf, files["good"]}, "", 0,
			[]string{files["good"] + ": ok"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCmd(t, envVars, tc.stdin, append([]string{"verify"}, tc.args...)...)
			if r.code != tc.wantCode {
				t.Errorf("exit code = %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tc.wantCode, r.stdout, r.stderr)
			}
			assertInOrder(t, r.stdout, tc.want)
			assertNoSecrets(t, r, testSecret)
		})
	}
}

func TestVerifySecretErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args     []string
		wantCode int
		stderr   string
	}{
		{[]string{"--secret-env", "NOT_SET_ANYWHERE"}, exitFail, "environment variable NOT_SET_ANYWHERE is not set"},
		{[]string{"--secret-file", dir + "/none"}, exitFail, "--secret-file: open"},
		{[]string{"--secret-file", writeFile(t, dir, "empty", "\n")}, exitFail, "the secret is empty"},
		{[]string{"--secret-file", "a", "--secret-env", "B"}, exitUsage, "give exactly one of"},
	}
	for _, tc := range tests {
		r := runCmd(t, nil, "", append([]string{"verify"}, tc.args...)...)
		if r.code != tc.wantCode || !strings.Contains(r.stderr, tc.stderr) {
			t.Errorf("verify %q = %d, stderr %q; want %d, stderr containing %q", tc.args, r.code, r.stderr, tc.wantCode, tc.stderr)
		}
	}
}

// dropHeader removes every line of the named header from a message's header block.
func dropHeader(t *testing.T, msg []byte, name string) []byte {
	t.Helper()
	head, body, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
	if !ok {
		t.Fatal("message without a header/body separator")
	}
	var out [][]byte
	skipping := false
	for _, line := range bytes.Split(head, []byte("\r\n")) {
		if skipping && len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			continue
		}
		skipping = strings.HasPrefix(strings.ToLower(string(line)), strings.ToLower(name)+":")
		if !skipping {
			out = append(out, line)
		}
	}
	res := append(bytes.Join(out, []byte("\r\n")), "\r\n\r\n"...)
	if bytes.Equal(res[:len(res)-4], head) {
		t.Fatalf("header %s not found", name)
	}
	return append(res, body...)
}

// renderDigest renders a digest of records with the plugin's renderer and returns it with
// the single emails of its records.
func renderDigest(t *testing.T, secret string, readable bool, records []map[string]any) ([]byte, []*output.Email) {
	t.Helper()
	r := testRenderer(t, secret, readable)
	var members []output.DigestMember
	var singles []*output.Email
	for i, fields := range records {
		rec := output.Record{Tag: "app.alerts", Time: time.Date(2026, 11, 27, 10, 0, i, 0, time.UTC), Fields: fields}
		e, err := r.Render(rec)
		if err != nil {
			t.Fatal(err)
		}
		singles = append(singles, e)
		members = append(members, output.DigestMember{MessageID: e.MessageID, Tag: rec.Tag, Time: rec.Time, Payload: e.Payload})
	}
	d, err := r.RenderDigest(output.Digest{Members: members})
	if err != nil {
		t.Fatal(err)
	}
	return d.Data, singles
}

// TestVerifyDigest: a digest prints its count and, per line, the signature its single email
// carried; a tampered digest fails; single emails print as before.
func TestVerifyDigest(t *testing.T) {
	dir := t.TempDir()
	recs := []map[string]any{
		{"msg": "intrusion detected on host-17", "severity": int64(9)},
		{"msg": "intrusion detected on host-18", "severity": int64(7)},
		{"msg": "intrusion detected on host-19", "severity": int64(9)},
	}
	machine, singles := renderDigest(t, testSecret, false, recs)
	readable, _ := renderDigest(t, testSecret, true, recs[:1])
	// A soft line break of the quoted-printable part may fall anywhere in "host-18".
	tampered := regexp.MustCompile(`h(=\r\n)?o(=\r\n)?s(=\r\n)?t(=\r\n)?-(=\r\n)?1(=\r\n)?8`).
		ReplaceAllFunc(machine, func(m []byte) []byte { return bytes.Replace(m, []byte("8"), []byte("9"), 1) })
	if bytes.Equal(tampered, machine) {
		t.Fatal("the digest does not hold the text the test tampers with")
	}
	single := renderEmail(t, testSecret, false, recs[0])
	files := map[string]string{
		"machine":  writeFile(t, dir, "machine.eml", string(machine)),
		"readable": writeFile(t, dir, "readable.eml", string(readable)),
		"tampered": writeFile(t, dir, "tampered.eml", string(tampered)),
		"single":   writeFile(t, dir, "single.eml", string(single)),
	}
	secretFile := writeFile(t, dir, "secret", testSecret+"\n")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string
	}{
		{"machine digest and a single email", []string{files["machine"], files["single"]}, exitOK, []string{
			files["machine"] + ": digest of 3 records: signature OK\n",
			"  line 1: single email X-Smtpout-Signature: " + singles[0].Signature + "\n",
			"  line 2: single email X-Smtpout-Signature: " + singles[1].Signature + "\n",
			"  line 3: single email X-Smtpout-Signature: " + singles[2].Signature + "\n",
			files["single"] + ": ok\n",
		}},
		{"readable digest of one record", []string{files["readable"]}, exitOK, []string{
			files["readable"] + ": digest of 1 record: signature OK\n",
			"  line 1: single email X-Smtpout-Signature: " + singles[0].Signature + "\n",
		}},
		{"tampered digest", []string{files["tampered"], files["machine"]}, exitFail, []string{
			files["tampered"] + ": FAILED: signature does not match the payload",
			files["machine"] + ": digest of 3 records: signature OK",
			"1 of 2 message(s) FAILED",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCmd(t, nil, "", append([]string{"verify", "--secret-file", secretFile}, tc.args...)...)
			if r.code != tc.wantCode {
				t.Errorf("exit code = %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tc.wantCode, r.stdout, r.stderr)
			}
			assertInOrder(t, r.stdout, tc.want)
			assertNoSecrets(t, r, testSecret)
		})
	}
}
