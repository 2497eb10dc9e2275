package fbconf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// writeFiles writes name -> content under a new temporary directory and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// outputView is what the tests compare: an Output with file names made relative.
type outputView struct {
	Instance, Alias, Pos string
	Keys                 map[string]string
}

func view(dir string, outs []Output) []outputView {
	var v []outputView
	for _, o := range outs {
		rel, _ := filepath.Rel(dir, o.Pos.File)
		v = append(v, outputView{
			Instance: o.Instance, Alias: o.Alias,
			Pos:  Pos{File: rel, Line: o.Pos.Line}.String(),
			Keys: o.Keys,
		})
	}
	return v
}

func relWarnings(dir string, ws []Warning) []string {
	var out []string
	for _, w := range ws {
		rel, _ := filepath.Rel(dir, w.Pos.File)
		out = append(out, Warning{Pos: Pos{File: rel, Line: w.Pos.Line}, Msg: w.Msg}.String())
	}
	return out
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		main      string
		env       map[string]string
		want      []outputView
		wantWarn  []string
		wantFiles int
	}{
		{
			name: "classic with @INCLUDE glob, @SET, ${VAR} and several outputs",
			main: "fluent-bit.conf",
			files: map[string]string{
				"fluent-bit.conf": `# main file
@SET DOMAIN=corp.com
@INCLUDE outputs/*.conf

[SERVICE]
    Flush 1

[INPUT]
    Name dummy

[OUTPUT]
    NAME         SMTP
    Match        *
    Dest_Host    smtp.${DOMAIN}:587
    dest_email   SOC <soc@${DOMAIN}>, oncall@${DOMAIN}
    from_email   alerts@${DOMAIN}
    secret_key   ${SECRET}
    Is_StartTLS  on
    # a comment inside the section
    Alias        mail-main
`,
				"outputs/a.conf": `[OUTPUT]
    Name       stdout
    Match      *
`,
				"outputs/b.conf": "[OUTPUT]\r\n\tName smtp\r\n\tdest_host   mx.${DOMAIN}\r\n\tsubject  Alert: $TAG[1]  \r\n",
			},
			env: map[string]string{"SECRET": "from-the-environment", "DOMAIN": "ignored.example"},
			want: []outputView{
				{Instance: "smtp.1", Pos: "outputs/b.conf:1", Keys: map[string]string{
					"name": "smtp", "dest_host": "mx.corp.com", "subject": "Alert: $TAG[1]",
				}},
				{Instance: "smtp.2", Alias: "mail-main", Pos: "fluent-bit.conf:11", Keys: map[string]string{
					"name": "SMTP", "match": "*", "dest_host": "smtp.corp.com:587",
					"dest_email": "SOC <soc@corp.com>, oncall@corp.com", "from_email": "alerts@corp.com",
					"secret_key": "from-the-environment", "is_starttls": "on", "alias": "mail-main",
				}},
			},
			wantFiles: 3,
		},
		{
			name: "classic: unset variable reads as empty and the key as absent; duplicate key keeps the first",
			main: "fb.conf",
			files: map[string]string{
				"fb.conf": `[OUTPUT]
    name      smtp
    password  ${NOPE}
    subject   first
    subject   second
`,
			},
			want: []outputView{{Instance: "smtp.0", Pos: "fb.conf:1", Keys: map[string]string{
				"name": "smtp", "subject": "first",
			}}},
			wantWarn: []string{
				"fb.conf:5: subject is set again (first at line 4): the plugin sees only the first value",
				"fb.conf:3: variable ${NOPE} is used but not set: it reads as empty",
			},
			wantFiles: 1,
		},
		{
			name: "classic: include relative to the main file's directory from a nested file",
			main: "etc/main.conf",
			files: map[string]string{
				"etc/main.conf":        "@INCLUDE conf.d/out.conf\n",
				"etc/conf.d/out.conf":  "@INCLUDE conf.d/more.conf\n",
				"etc/conf.d/more.conf": "[OUTPUT]\n  Name smtp\n  dest_host a.example\n",
			},
			want: []outputView{{Instance: "smtp.0", Pos: "etc/conf.d/more.conf:1", Keys: map[string]string{
				"name": "smtp", "dest_host": "a.example",
			}}},
			wantFiles: 3,
		},
		{
			name: "YAML with env, includes and several outputs",
			main: "fluent-bit.yaml",
			files: map[string]string{
				"fluent-bit.yaml": `env:
  DOMAIN: corp.com
  PORT: 2525
includes:
  - extra.yaml
service:
  flush: 1
pipeline:
  inputs:
    - name: dummy
  outputs:
    - name: stdout
      match: '*'
    - Name: smtp
      alias: yaml-mail
      match: "*"
      dest_host: smtp.${DOMAIN}:${PORT}
      dest_email: '"Doe, John" <jd@corp.com>'
      is_readable: true
      timeout: 30
      secret_key: ${SECRET}
      processors:
        logs:
          - name: content_modifier
`,
				"extra.yaml": `pipeline:
  outputs:
    - name: smtp
      dest_host: relay.example
`,
			},
			env: map[string]string{"SECRET": "s3cr3t-from-env-123"},
			want: []outputView{
				{Instance: "smtp.0", Pos: "extra.yaml:3", Keys: map[string]string{
					"name": "smtp", "dest_host": "relay.example",
				}},
				{Instance: "smtp.2", Alias: "yaml-mail", Pos: "fluent-bit.yaml:14", Keys: map[string]string{
					"name": "smtp", "alias": "yaml-mail", "match": "*", "dest_host": "smtp.corp.com:2525",
					"dest_email": `"Doe, John" <jd@corp.com>`, "is_readable": "true", "timeout": "30",
					"secret_key": "s3cr3t-from-env-123",
				}},
			},
			wantFiles: 2,
		},
		{
			name: "format guessed from content when the extension says nothing",
			main: "config",
			files: map[string]string{
				"config": "pipeline:\n  outputs:\n    - name: smtp\n      dest_host: x.example\n",
			},
			want: []outputView{{Instance: "smtp.0", Pos: "config:3", Keys: map[string]string{
				"name": "smtp", "dest_host": "x.example",
			}}},
			wantFiles: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, tc.files)
			cfg, err := LoadWith(filepath.Join(dir, tc.main), Options{LookupEnv: env(tc.env)})
			if err != nil {
				t.Fatalf("LoadWith: %v", err)
			}
			if diff := cmp.Diff(tc.want, view(dir, cfg.Outputs("smtp"))); diff != "" {
				t.Errorf("Outputs(smtp) (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantWarn, relWarnings(dir, cfg.Warnings)); diff != "" {
				t.Errorf("Warnings (-want +got):\n%s", diff)
			}
			if len(cfg.Files) != tc.wantFiles {
				t.Errorf("Files = %q, want %d files", cfg.Files, tc.wantFiles)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		main    string
		files   map[string]string
		wantErr string // the error without the directory
	}{
		{"key not indented", "a.conf", map[string]string{"a.conf": "[OUTPUT]\nName smtp\n"},
			"a.conf:2: key lines must be indented under their [SECTION] header"},
		{"inconsistent indentation", "a.conf", map[string]string{"a.conf": "[OUTPUT]\n    Name smtp\n  Match *\n"},
			"a.conf:3: invalid indentation level: use the same indentation for every key"},
		{"key without value", "a.conf", map[string]string{"a.conf": "[OUTPUT]\n    Name smtp\n    dest_host\n"},
			`a.conf:3: key "dest_host" has no value`},
		{"bad header", "a.conf", map[string]string{"a.conf": "[OUTPUT\n    Name smtp\n"},
			"a.conf:1: bad section header: expected [NAME]"},
		{"missing include", "a.conf", map[string]string{"a.conf": "@INCLUDE nope.conf\n"},
			`a.conf:1: include "nope.conf": no such file`},
		{"include loop", "a.conf", map[string]string{"a.conf": "@INCLUDE b.conf\n", "b.conf": "@INCLUDE a.conf\n"},
			`b.conf:1: a.conf is included twice (an include loop?)`},
		{"YAML outputs not a list", "a.yaml", map[string]string{"a.yaml": "pipeline:\n  outputs:\n    name: smtp\n"},
			"a.yaml:2: pipeline.outputs must be a list of plugins (- name: ...)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, tc.files)
			_, err := Load(filepath.Join(dir, tc.main))
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("Load() error = %v, want an *Error", err)
			}
			got := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), "")
			if diff := cmp.Diff(tc.wantErr, got); diff != "" {
				t.Errorf("Load() error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadYAMLSyntaxError(t *testing.T) {
	dir := writeFiles(t, map[string]string{"a.yaml": "pipeline:\n  outputs:\n    - name: smtp\n   bad: [\n"})
	_, err := Load(filepath.Join(dir, "a.yaml"))
	if err == nil || !strings.Contains(err.Error(), "a.yaml") || !strings.Contains(err.Error(), "YAML:") {
		t.Fatalf("Load() error = %v, want a YAML error naming the file", err)
	}
}

func TestUnknownKeys(t *testing.T) {
	known := []string{"dest_host", "dest_email", "cc_email", "bcc_email", "from_email", "secret_key", "is_starttls", "tls_verify"}
	o := Output{KeyPos: map[string]Pos{
		"name":                              {File: "f.conf", Line: 2},
		"dest_emails":                       {File: "f.conf", Line: 3},
		"secretkey":                         {File: "f.conf", Line: 4},
		"is_startls":                        {File: "f.conf", Line: 5},
		"tls.verify":                        {File: "f.conf", Line: 6},
		"net.keepalive":                     {File: "f.conf", Line: 7},
		"storage.total_limit_size":          {File: "f.conf", Line: 8},
		"workers":                           {File: "f.conf", Line: 9},
		"colour":                            {File: "f.conf", Line: 10},
		"dest_host":                         {File: "f.conf", Line: 11},
		"macth":                             {File: "f.conf", Line: 12},
		"storage.pause_on_chunks_overlimit": {File: "f.conf", Line: 13},
		"oauth2_client_id":                  {File: "f.conf", Line: 14},
	}}
	var got []string
	for _, w := range o.UnknownKeys(known) {
		got = append(got, w.String())
	}
	want := []string{
		`f.conf:3: unknown key "dest_emails": the plugin ignores it (did you mean "dest_email"?)`,
		`f.conf:4: unknown key "secretkey": the plugin ignores it (did you mean "secret_key"?)`,
		`f.conf:5: unknown key "is_startls": the plugin ignores it (did you mean "is_starttls"?)`,
		`f.conf:10: unknown key "colour": the plugin ignores it`,
		`f.conf:12: unknown key "macth": the plugin ignores it (did you mean "match"?)`,
		`f.conf:14: key "oauth2_client_id" starts with "oauth2": Fluent Bit 5.x keeps such keys for its own OAuth 2.0 client and refuses to start on one it does not know; the plugin's OAuth keys start with auth_`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("UnknownKeys (-want +got):\n%s", diff)
	}
}

func TestSuggest(t *testing.T) {
	cands := []string{"dest_email", "dest_host", "cc_email", "bcc_email", "timeout", "tls_verify"}
	tests := []struct{ in, want string }{
		{"dest_emails", "dest_email"},
		{"dest-host", "dest_host"},
		{"DEST_HOST", "dest_host"},
		{"bc_email", "bcc_email"},
		{"timeuot", "timeout"},
		{"verify", ""},
		{"zzz", ""},
		{"tls_verfy", "tls_verify"},
	}
	for _, tc := range tests {
		if got := Suggest(tc.in, cands); got != tc.want {
			t.Errorf("Suggest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDetectFormat(t *testing.T) {
	tests := []struct {
		path, data string
		want       Format
	}{
		{"x.yaml", "[OUTPUT]", YAML},
		{"x.YML", "", YAML},
		{"x.conf", "pipeline:", Classic},
		{"x", "# c\n\n[SERVICE]\n", Classic},
		{"x", "@INCLUDE a\n", Classic},
		{"x", "# c\nservice:\n  flush: 1\n", YAML},
		{"x", "---\n", YAML},
		{"x", "", Classic},
	}
	for _, tc := range tests {
		if got := DetectFormat(tc.path, []byte(tc.data)); got != tc.want {
			t.Errorf("DetectFormat(%q, %q) = %v, want %v", tc.path, tc.data, got, tc.want)
		}
	}
}

func TestFindOutput(t *testing.T) {
	outs := []Output{
		{Instance: "smtp.0"},
		{Instance: "smtp.3", Alias: "ops"},
	}
	tests := []struct {
		sel, want, wantErr string
	}{
		{"ops", "smtp.3", ""},
		{"smtp.0", "smtp.0", ""},
		{"SMTP.3", "smtp.3", ""},
		{"1", "smtp.3", ""},
		{"", "", "2 outputs match; choose one with --output (smtp.0, ops)"},
		{"7", "", `"7": no such output (give an alias, an instance name such as smtp.0, or an index from 0)`},
	}
	for _, tc := range tests {
		got, err := FindOutput(outs, tc.sel)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if got.Instance != tc.want || gotErr != tc.wantErr {
			t.Errorf("FindOutput(%q) = %q, %q; want %q, %q", tc.sel, got.Instance, gotErr, tc.want, tc.wantErr)
		}
	}
	if got, err := FindOutput(outs[:1], ""); err != nil || got.Instance != "smtp.0" {
		t.Errorf("FindOutput(one, \"\") = %q, %v; want smtp.0", got.Instance, err)
	}
	if _, err := FindOutput(nil, ""); !errors.Is(err, ErrNoOutput) {
		t.Errorf("FindOutput(nil, \"\") error = %v, want ErrNoOutput", err)
	}
}
