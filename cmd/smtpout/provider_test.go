package main

import (
	"strings"
	"testing"
)

// TestCheckProviderLimits: check prints Exchange Online's and Gmail's published limits next
// to the configuration, and warns for each way the configuration can exceed them.
func TestCheckProviderLimits(t *testing.T) {
	envVars := map[string]string{"SMTPOUT_SECRET": testSecret, "SMTP_PASSWORD": testPassword}
	output := func(extra string) string {
		return "[OUTPUT]\n    Name smtp\n    Match *\n    dest_email soc@corp.com\n    from_email alerts@corp.com\n" +
			"    username alerts@corp.com\n    password ${SMTP_PASSWORD}\n    secret_key ${SMTPOUT_SECRET}\n" + extra
	}
	for _, tc := range []struct {
		name    string
		conf    string
		want    []string // in order
		notWant []string
	}{
		{
			name: "Exchange Online, nothing set",
			conf: output("    dest_host smtp.office365.com:587\n    is_starttls true\n"),
			want: []string{
				`OK smtp.0: dest_host=smtp.office365.com:587 provider="Exchange Online"`, "max_connections=3 quota_pause=1m0s",
				"smtp.0: Exchange Online limits (published):",
				"- 3 concurrent connections per mailbox", "- 30 messages per minute", "- 10,000 recipients per rolling 24 h",
				"[ warn] smtp.0: no max_emails_per_minute and no digest_window", "set digest_window", "or max_emails_per_minute 30 or less",
				"[ warn] smtp.0: records hit by a quota reply", "Retry_Limit no_limits",
				"1 smtp output(s): 1 OK, 0 FAILED, 3 warning(s)", // and the plugin's Basic auth warning
			},
		},
		{
			name:    "Exchange Online, the recommended configuration",
			conf:    output("    dest_host smtp.office365.com:587\n    is_starttls true\n    max_emails_per_minute 30\n    Retry_Limit no_limits\n"),
			want:    []string{"max_connections=3", "Exchange Online limits (published):", "1 smtp output(s): 1 OK, 0 FAILED, 1 warning(s)"}, // the Basic auth one
			notWant: []string{"[ warn] smtp.0:"},
		},
		{
			name:    "Exchange Online with digests: digest_window is a guard",
			conf:    output("    dest_host smtp.office365.com:587\n    is_starttls true\n    digest_window 10m\n    digest_by $host\n    Retry_Limit no_limits\n"),
			want:    []string{"digest_window=10m0s digest_by=$host digest_max_records=1000", "Exchange Online limits (published):", "1 smtp output(s): 1 OK, 0 FAILED, 1 warning(s)"}, // the Basic auth one
			notWant: []string{"[ warn] smtp.0:", "unknown key"},
		},
		{
			name: "Exchange Online over its limits",
			conf: output("    dest_host smtp.office365.com:587\n    is_starttls true\n    max_connections 6\n    max_emails_per_minute 100\n    Retry_Limit false\n"),
			want: []string{
				"max_connections=6",
				"[ warn] smtp.0: max_connections 6 is above the 3 connections", "432 4.3.2",
				"[ warn] smtp.0: max_emails_per_minute 100 is above Exchange Online's 30 messages per minute",
				"1 smtp output(s): 1 OK, 0 FAILED, 3 warning(s)",
			},
		},
		{
			name: "Gmail",
			conf: output("    dest_host smtp.gmail.com:465\n    Retry_Limit 3\n"),
			want: []string{
				"provider=Gmail", "max_connections=2",
				"smtp.0: Gmail limits (published):", "- about 2,000 recipients per user per rolling day",
				"[ warn] smtp.0: no max_emails_per_minute and no digest_window: a storm of records exhausts Gmail's daily sending limit",
				"[ warn] smtp.0: records hit by a quota reply",
				"1 smtp output(s): 1 OK, 0 FAILED, 3 warning(s)",
			},
		},
		{
			name:    "another server: no provider block",
			conf:    output("    dest_host smtp.corp.com:465\n"),
			want:    []string{"max_connections=4 max_emails_per_minute=0", "1 smtp output(s): 1 OK, 0 FAILED, 0 warning(s)"},
			notWant: []string{"limits (published)", "provider=", "quota_pause"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "fluent-bit.conf", tc.conf)
			r := runCmd(t, envVars, "", "check", "-c", path)
			if r.code != exitOK {
				t.Errorf("exit code = %d, want %d", r.code, exitOK)
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
