package config

import (
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestEffective gives the whole effective configuration for each token source and with every
// optional key set: the line the plugin logs at start-up and smtpout check prints.
func TestEffective(t *testing.T) {
	const pw, sk, cs, key = "pw-NEVER-shown", "sk-NEVER-shown", "cs-NEVER-shown", "key-NEVER-shown"
	base := func() Config {
		return Config{
			Host: "smtp.corp.com", Port: 465,
			From:     mail.Address{Name: "Fluent Bit", Address: "fb@corp.com"},
			To:       []mail.Address{{Name: "SOC", Address: "soc@corp.com"}, {Address: "oncall@corp.com"}},
			Username: "fb", Password: pw, AuthMechanism: MechPlain, SecretKey: sk,
			TLSVerify: true, TLSServerName: "smtp.corp.com",
			Subject: Template{Raw: "Alert $TAG"}, Timeout: 30 * time.Second, JSONDateKey: "date",
			MaxConnections: 4, PipelineDepth: 16, DeadLetterMaxSize: 100 << 20,
			Durability: Durability{FlushTimeout: 3 * time.Second, LedgerMaxEntries: 100_000, LedgerMaxAge: 24 * time.Hour},
		}
	}
	oauth := func(mech string, a Auth) Config {
		c := base()
		c.Password, c.AuthMechanism, c.Username, c.Auth = "", mech, "alerts@corp.com", a
		return c
	}
	const head = `dest_host=smtp.corp.com:465 tls=implicit tls_verify=true tls_server_name=smtp.corp.com tls_ca_file="" ` +
		`from_email="\"Fluent Bit\" <fb@corp.com>" dest_email="\"SOC\" <soc@corp.com>, <oncall@corp.com>" cc_email="" bcc_email="" `
	const tail = `secret_key=[redacted] is_readable=false subject="Alert $TAG" timeout=30s helo_name="" json_date_key=date ` +
		`max_connections=4 max_emails_per_minute=0 pipelining=true chunking=true pipeline_depth=16 dead_letter_dir="" ` +
		`flush_timeout=3s ledger_dir=""`
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"password", base(), head + `auth=plain username=fb password=[redacted] ` + tail},
		{"no credentials", func() Config { c := base(); c.Username, c.Password = "", ""; return c }(),
			head + `auth=none username="" password=(unset) ` + tail},
		{"every optional key", func() Config {
			c := base()
			c.Host, c.Port, c.StartTLS, c.TLSVerify, c.TLSCAFile, c.TLSServerName = "::1", 587, true, false, "/etc/ca.pem", "mail.corp.com"
			c.Cc, c.Bcc = []mail.Address{{Address: "boss@corp.com"}}, []mail.Address{{Name: "Audit", Address: "audit@corp.com"}}
			c.AuthMechanism, c.AuthLogin = MechLogin, true
			c.Readable, c.Subject, c.Timeout, c.HeloName, c.JSONDateKey = true, Template{Raw: "Fluent Bit: $TAG"}, 10*time.Second, "fb.corp.com", ""
			c.MaxConnections, c.MaxEmailsPerMinute, c.DisablePipelining, c.DisableChunking, c.PipelineDepth = 8, 600, true, true, 1
			c.DeadLetterDir, c.DeadLetterMaxSize = "/var/dead", 1<<20
			c.LedgerDir, c.LedgerMaxEntries, c.LedgerMaxAge, c.FlushTimeout = "/var/ledger", 5000, 48*time.Hour, 2500*time.Millisecond
			c.DigestWindow, c.DigestMaxRecords = 10*time.Minute, 200
			c.DigestBy = []Template{{Raw: "$host"}, {Raw: "$detect['cat']"}}
			return c
		}(), `dest_host=[::1]:587 tls=starttls tls_verify=false tls_server_name=mail.corp.com tls_ca_file=/etc/ca.pem ` +
			`from_email="\"Fluent Bit\" <fb@corp.com>" dest_email="\"SOC\" <soc@corp.com>, <oncall@corp.com>" ` +
			`cc_email="<boss@corp.com>" bcc_email="\"Audit\" <audit@corp.com>" auth=login username=fb password=[redacted] ` +
			`secret_key=[redacted] is_readable=true subject="Fluent Bit: $TAG" timeout=10s helo_name=fb.corp.com json_date_key="" ` +
			`max_connections=8 max_emails_per_minute=600 digest_window=10m0s digest_by="$host,$detect['cat']" digest_max_records=200 ` +
			`pipelining=false chunking=false pipeline_depth=1 ` +
			`dead_letter_dir=/var/dead dead_letter_max_size=1048576 flush_timeout=2.5s ` +
			`ledger_dir=/var/ledger ledger_max_entries=5000 ledger_max_age=48h0m0s`},
		{"token file", oauth(MechXOAuth2, Auth{Source: SourceTokenFile, TokenFile: "/run/token"}),
			head + `auth=xoauth2 username=alerts@corp.com auth_source=token_file auth_token_file=/run/token ` + tail},
		{"service account", oauth(MechOAuthBearer, Auth{Source: SourceServiceAccount,
			ServiceAccountFile: "/etc/sa.json", ClientID: "fb@p.iam.gserviceaccount.com", TokenURL: "https://oauth2.googleapis.com/token",
			Scopes: []string{"https://mail.google.com/"}, ServiceAccountJSON: key}),
			head + `auth=oauthbearer username=alerts@corp.com auth_source=service_account auth_service_account_file=/etc/sa.json ` +
				`service_account=fb@p.iam.gserviceaccount.com auth_token_url=https://oauth2.googleapis.com/token ` +
				`auth_scope=https://mail.google.com/ ` + tail},
		{"client secret", oauth(MechXOAuth2, Auth{Source: SourceClientSecret,
			TokenURL: "https://login.example/t/token", ClientID: "app-1", Scopes: []string{"s1", "s2"}, ClientSecret: cs}),
			head + `auth=xoauth2 username=alerts@corp.com auth_source=client_secret auth_token_url=https://login.example/t/token ` +
				`auth_client_id=app-1 auth_scope="s1 s2" auth_client_secret=[redacted] auth_client_auth=post ` + tail},
		{"client secret, basic", oauth(MechXOAuth2, Auth{Source: SourceClientSecret,
			TokenURL: "https://login.example/t/token", ClientID: "app-1", ClientSecret: cs, ClientAuthBasic: true}),
			head + `auth=xoauth2 username=alerts@corp.com auth_source=client_secret auth_token_url=https://login.example/t/token ` +
				`auth_client_id=app-1 auth_scope="" auth_client_secret=[redacted] auth_client_auth=basic ` + tail},
		{"client certificate", oauth(MechXOAuth2, Auth{Source: SourceClientCert,
			TokenURL: "https://login.example/t/token", ClientID: "app-1", Scopes: []string{"s1"},
			ClientCertFile: "/etc/c.pem", ClientKeyFile: "/etc/k.pem", ClientKeyPEM: key}),
			head + `auth=xoauth2 username=alerts@corp.com auth_source=client_certificate auth_token_url=https://login.example/t/token ` +
				`auth_client_id=app-1 auth_scope=s1 auth_client_cert_file=/etc/c.pem auth_client_key_file=/etc/k.pem ` + tail},
		{"client assertion", oauth(MechXOAuth2, Auth{Source: SourceClientAssertion,
			TokenURL: "https://login.example/t/token", ClientID: "app-1", Scopes: []string{"s1"}, ClientAssertionFile: "/var/run/fed"}),
			head + `auth=xoauth2 username=alerts@corp.com auth_source=client_assertion auth_token_url=https://login.example/t/token ` +
				`auth_client_id=app-1 auth_scope=s1 auth_client_assertion_file=/var/run/fed ` + tail},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.cfg.Effective()
			if diff := cmp.Diff(strings.Fields(tc.want), strings.Fields(got)); diff != "" {
				t.Errorf("effective configuration (-want +got):\n%s", diff)
			}
			if got != tc.want {
				t.Errorf("effective configuration =\n%s\nwant\n%s", got, tc.want)
			}
			for _, s := range []string{pw, sk, cs, key} {
				if strings.Contains(got, s) {
					t.Errorf("a secret is shown: %s", got)
				}
			}
		})
	}
}
