package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCheckWarnsHotReloadWithWorkers: smtpout check warns once per smtp output with Workers
// >= 1 when the file turns hot reload on, in either format, and says nothing otherwise.
func TestCheckWarnsHotReloadWithWorkers(t *testing.T) {
	const output = `[OUTPUT]
    Name        smtp
    Match       *
    Workers     %s
    dest_host   smtp.corp.com:587
    dest_email  soc@corp.com
    from_email  alerts@corp.com
    secret_key  a-long-shared-secret-0123456789
    is_starttls on
`
	classic := func(service, workers string) string {
		return service + strings.Replace(output, "%s", workers, 1)
	}
	yaml := func(service, workers string) string {
		return service + `pipeline:
  inputs:
    - name: dummy
  outputs:
    - name: smtp
      match: "*"
      workers: ` + workers + `
      dest_host: smtp.corp.com:587
      dest_email: soc@corp.com
      from_email: alerts@corp.com
      secret_key: a-long-shared-secret-0123456789
      is_starttls: on
`
	}
	warn := func(at, workers, service string) string {
		return "warning: " + at + ": smtp.0 has Workers " + workers + " and hot reload is on (" + service +
			"): Fluent Bit crashes (SIGSEGV) on the second hot reload of a Go output with workers; use Workers 0 " +
			"with hot reload, or turn hot reload off and restart Fluent Bit when the configuration changes"
	}
	tests := []struct {
		name, file, conf string
		want             []string // the hot reload warning lines
	}{
		{"classic, Hot_Reload On, Workers 2", "fluent-bit.conf", classic("[SERVICE]\n    Hot_Reload On\n", "2"),
			[]string{warn("fluent-bit.conf:6", "2", "fluent-bit.conf:2")}},
		{"classic, Hot_Reload yes, Workers 1", "fluent-bit.conf", classic("[SERVICE]\n    hot_reload yes\n", "1"),
			[]string{warn("fluent-bit.conf:6", "1", "fluent-bit.conf:2")}},
		{"classic, Hot_Reload On, Workers 0", "fluent-bit.conf", classic("[SERVICE]\n    Hot_Reload On\n", "0"), nil},
		{"classic, Hot_Reload Off, Workers 2", "fluent-bit.conf", classic("[SERVICE]\n    Hot_Reload Off\n", "2"), nil},
		{"classic, no Hot_Reload, Workers 2", "fluent-bit.conf", classic("[SERVICE]\n    Flush 1\n", "2"), nil},
		{"yaml, hot_reload on, workers 1", "fluent-bit.yaml", yaml("service:\n  hot_reload: on\n", "1"),
			[]string{warn("fluent-bit.yaml:9", "1", "fluent-bit.yaml:2")}},
		{"yaml, hot_reload on, workers 0", "fluent-bit.yaml", yaml("service:\n  hot_reload: on\n", "0"), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), tc.file, tc.conf)
			r := runCmd(t, nil, "", "check", "-c", path)
			var got []string
			for _, l := range strings.Split(r.stdout, "\n") {
				if strings.Contains(l, "hot reload") {
					got = append(got, strings.ReplaceAll(l, path, tc.file))
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("hot reload warnings (-want +got):\n%s\nstdout:\n%s", diff, r.stdout)
			}
			if r.code != exitOK {
				t.Errorf("exit code = %d, want %d (a warning, not a failure):\n%s", r.code, exitOK, r.stdout)
			}
		})
	}
}
