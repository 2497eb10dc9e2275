package main

import (
	"strings"
	"testing"
)

const (
	testSecret   = "a-long-shared-secret-0123456789"
	testPassword = "hunter2-but-longer"
)

func TestCheck(t *testing.T) {
	envVars := map[string]string{"SMTPOUT_SECRET": testSecret, "SMTP_PASSWORD": testPassword}
	tests := []struct {
		name     string
		file     string // file name: its extension picks the format
		conf     string
		args     []string // extra flags
		wantCode int
		want     []string // substrings of stdout, in order
		notWant  []string
	}{
		{
			name: "good classic config",
			file: "fluent-bit.conf",
			conf: `[SERVICE]
    Flush 1
[INPUT]
    Name dummy
[OUTPUT]
    Name        smtp
    Match       *
    Workers     2
    dest_host   smtp.corp.com:587
    dest_email  SOC <soc@corp.com>, oncall@corp.com
    from_email  alerts@corp.com
    username    alerts@corp.com
    password    ${SMTP_PASSWORD}
    secret_key  ${SMTPOUT_SECRET}
    is_starttls yes
`,
			wantCode: 0,
			want: []string{
				"fluent-bit.conf:5: [OUTPUT] smtp.0",
				"OK smtp.0: dest_host=smtp.corp.com:587 tls=starttls",
				"password=[redacted] secret_key=[redacted]",
				"1 smtp output(s): 1 OK, 0 FAILED, 0 warning(s)",
			},
			notWant: []string{"[error]", "[ warn]"},
		},
		{
			name: "bad config: every bad key named, unknown key with a suggestion",
			file: "fluent-bit.conf",
			conf: `[OUTPUT]
    Name         smtp
    Match        *
    dest_host    smtp.corp.com:99999
    dest_emails  soc@corp.com
    from_email   not-an-address
    password     ${SMTP_PASSWORD}
    secret_key   ${SMTPOUT_SECRET}
    is_readable  maybe
`,
			wantCode: 1,
			want: []string{
				"fluent-bit.conf:1: [OUTPUT] smtp.0",
				`[error] [output:smtp:smtp.0] configuration: is_readable: "maybe": is not a boolean`,
				`[error] [output:smtp:smtp.0] configuration: dest_host: "smtp.corp.com:99999": has port "99999"`,
				`[error] [output:smtp:smtp.0] configuration: dest_email: is required`,
				`[error] [output:smtp:smtp.0] configuration: from_email: "not-an-address": address "not-an-address" is not valid`,
				`[error] [output:smtp:smtp.0] configuration: username: is required when password is set`,
				`[error] [output:smtp:smtp.0] not started: 5 configuration problem(s)`,
				"[ warn] ", `fluent-bit.conf:5: unknown key "dest_emails": the plugin ignores it (did you mean "dest_email"?)`,
				"FAILED smtp.0: Fluent Bit would refuse to start",
				"1 smtp output(s): 0 OK, 1 FAILED, 1 warning(s)",
			},
			notWant: []string{"OK smtp.0"},
		},
		{
			name: "YAML, two outputs: one good, one bad; the Fluent Bit instance names",
			file: "fluent-bit.yaml",
			conf: `env:
  FROM: alerts@corp.com
pipeline:
  outputs:
    - name: stdout
      match: '*'
    - name: smtp
      alias: good-mail
      dest_host: smtp.corp.com
      dest_email: soc@corp.com
      from_email: ${FROM}
      secret_key: ${SMTPOUT_SECRET}
    - name: smtp
      dest_host: smtp.corp.com
      dest_email: soc@corp.com,,x@corp.com
      from_email: ${FROM}
`,
			wantCode: 1,
			want: []string{
				"fluent-bit.yaml:7: [OUTPUT] smtp.1 (alias good-mail)",
				"OK good-mail: dest_host=smtp.corp.com:465 tls=implicit",
				"fluent-bit.yaml:13: [OUTPUT] smtp.2",
				`[error] [output:smtp:smtp.2] configuration: dest_email: "soc@corp.com,,x@corp.com": address 2 is empty (a stray comma?)`,
				`[error] [output:smtp:smtp.2] configuration: secret_key: is required`,
				"FAILED smtp.2",
				"2 smtp output(s): 1 OK, 1 FAILED, 0 warning(s)",
			},
		},
		{
			name: "warnings only: exit 0; core keys that never reach the plugin are named",
			file: "fb.conf",
			conf: `[OUTPUT]
    Name        smtp
    dest_host   smtp.corp.com
    dest_email  soc@corp.com
    from_email  alerts@corp.com
    secret_key  short
    tls_verify  off
    tls.verify  off
    helo_name   ${UNSET_VARIABLE_X}
`,
			wantCode: 0,
			want: []string{
				"warning: ",
				"variable ${UNSET_VARIABLE_X} is used but not set",
				"[ warn] [output:smtp:smtp.0] secret_key is shorter than 16 bytes",
				"[ warn] [output:smtp:smtp.0] tls_verify is false",
				"fb.conf:8: tls.verify is a Fluent Bit core key and never reaches the plugin: use tls_verify",
				"OK smtp.0",
				"1 OK, 0 FAILED",
			},
		},
		{
			name: "--strict turns warnings into a failure",
			file: "fb.conf",
			conf: `[OUTPUT]
    Name        smtp
    dest_host   smtp.corp.com
    dest_email  soc@corp.com
    from_email  alerts@corp.com
    secret_key  ${SMTPOUT_SECRET}
    subjet      hello
`,
			args:     []string{"--strict"},
			wantCode: 1,
			want:     []string{`unknown key "subjet": the plugin ignores it (did you mean "subject"?)`, "OK smtp.0", "1 warning(s)"},
		},
		{
			name:     "no smtp output",
			file:     "fb.conf",
			conf:     "[OUTPUT]\n    Name stdout\n    Match *\n",
			wantCode: 1,
			want:     []string{"FAILED: ", "no [OUTPUT] section with Name smtp"},
		},
		{
			name:     "syntax error",
			file:     "fb.conf",
			conf:     "[OUTPUT]\nName smtp\n",
			wantCode: 1,
			want:     []string{"FAILED: ", "fb.conf:2: key lines must be indented"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), tc.file, tc.conf)
			args := append([]string{"check", "-c", path}, tc.args...)
			r := runCmd(t, envVars, "", args...)
			if r.code != tc.wantCode {
				t.Errorf("exit code = %d, want %d", r.code, tc.wantCode)
			}
			assertInOrder(t, r.stdout, tc.want)
			for _, s := range tc.notWant {
				if strings.Contains(r.stdout, s) {
					t.Errorf("stdout contains %q:\n%s", s, r.stdout)
				}
			}
			assertNoSecrets(t, r, testSecret, testPassword)
		})
	}
}

// assertInOrder checks that each of want appears in out, after the previous one.
func assertInOrder(t *testing.T, out string, want []string) {
	t.Helper()
	rest := out
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("output lacks %q (in this order); output:\n%s", w, out)
			return
		}
		rest = rest[i+len(w):]
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		stdout   string
		stderr   string
	}{
		{nil, exitUsage, "", "Commands:"},
		{[]string{"help"}, exitOK, "Commands:", ""},
		{[]string{"nope"}, exitUsage, "", `unknown command "nope"`},
		{[]string{"check", "--help"}, exitOK, "Usage: smtpout check -c FILE", ""},
		{[]string{"help", "verify"}, exitOK, "Usage: smtpout verify", ""},
		{[]string{"probe", "-h"}, exitOK, "Usage: smtpout probe", ""},
		{[]string{"send", "--help"}, exitOK, "Usage: smtpout send", ""},
		{[]string{"check"}, exitUsage, "", "-c FILE is required"},
		{[]string{"check", "--bogus"}, exitUsage, "", "flag provided but not defined: -bogus"},
		{[]string{"verify", "x.eml"}, exitUsage, "", "give exactly one of --secret-file, --secret-env or -c"},
		{[]string{"send", "-c", "x", "--record", "{}", "--file", "y"}, exitUsage, "", "give --record or --file, not both"},
	}
	for _, tc := range tests {
		r := runCmd(t, nil, "", tc.args...)
		if r.code != tc.wantCode || !strings.Contains(r.stdout, tc.stdout) || !strings.Contains(r.stderr, tc.stderr) {
			t.Errorf("smtpout %q = %d, stdout %q, stderr %q; want %d, stdout containing %q, stderr containing %q",
				tc.args, r.code, r.stdout, r.stderr, tc.wantCode, tc.stdout, tc.stderr)
		}
	}
}

// TestCheckShippedConfigs: the configurations this repository ships start the plugin (every
// key valid), with the environment docker-compose.yml and demo/run.sh give them.
func TestCheckShippedConfigs(t *testing.T) {
	tests := []struct {
		path string
		env  map[string]string
	}{
		{"../../fluent-bit.conf.example", map[string]string{"SMTP_PASSWORD": testPassword, "SMTPOUT_SECRET_KEY": testSecret}},
		{"../../demo/fluent-bit.conf", map[string]string{"DEMO_DIR": "../../demo", "SMTP_HOST": "localhost:1465"}},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			r := runCmd(t, tc.env, "", "check", "-c", tc.path)
			if r.code != exitOK {
				t.Errorf("check -c %s = %d, want %d:\n%s%s", tc.path, r.code, exitOK, r.stdout, r.stderr)
			}
			assertInOrder(t, r.stdout, []string{"OK smtp.0: ", "1 smtp output(s): 1 OK, 0 FAILED"})
			assertNoSecrets(t, r, testSecret, testPassword)
		})
	}
}
