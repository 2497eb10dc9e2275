package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestProviderDefaults: dest_host on Exchange Online or Gmail sets max_connections to what
// the provider allows unless the key is set, and the effective configuration says so.
func TestProviderDefaults(t *testing.T) {
	type got struct {
		Provider       string
		MaxConnections int
		Shows          []string // the effective configuration's provider, max_connections and quota_pause
	}
	for _, tc := range []struct {
		name string
		keys MapGetter
		want got
	}{
		{"Exchange Online", MapGetter{"dest_host": "smtp.office365.com:587", "is_starttls": "true"},
			got{"Exchange Online", 3, []string{`provider="Exchange Online"`, "max_connections=3", "quota_pause=1m0s"}}},
		{"Exchange Online in capitals", MapGetter{"dest_host": "SMTP.Office365.com", "is_starttls": "true"},
			got{"Exchange Online", 3, []string{`provider="Exchange Online"`, "max_connections=3", "quota_pause=1m0s"}}},
		{"Exchange Online, max_connections set", MapGetter{"dest_host": "smtp.office365.com:587", "is_starttls": "true", "max_connections": "5"},
			got{"Exchange Online", 5, []string{`provider="Exchange Online"`, "max_connections=5", "quota_pause=1m0s"}}},
		{"Gmail", MapGetter{"dest_host": "smtp.gmail.com:465"},
			got{"Gmail", 2, []string{"provider=Gmail", "max_connections=2", "quota_pause=1m0s"}}},
		{"Gmail SMTP relay, quota_pause set", MapGetter{"dest_host": "smtp-relay.gmail.com:587", "is_starttls": "true", "quota_pause": "10s"},
			got{"Gmail", 2, []string{"provider=Gmail", "max_connections=2", "quota_pause=10s"}}},
		{"another server", MapGetter{"dest_host": "mail.office365.example.com"},
			got{"", DefaultMaxConnections, []string{"max_connections=4"}}},
		{"another server, quota_pause set", MapGetter{"dest_host": "smtp.example.com", "quota_pause": "5m"},
			got{"", DefaultMaxConnections, []string{"max_connections=4", "quota_pause=5m0s"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := minimalKeys(false)
			for k, v := range tc.keys {
				keys[k] = v
			}
			c, err := Parse(keys)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			g := got{Provider: c.Provider, MaxConnections: c.MaxConnections}
			for _, f := range strings.Fields(strings.ReplaceAll(c.Effective(), `"Exchange Online"`, `"Exchange_Online"`)) {
				f = strings.ReplaceAll(f, "Exchange_Online", "Exchange Online")
				for _, name := range []string{"provider=", "max_connections=", "quota_pause="} {
					if strings.HasPrefix(f, name) {
						g.Shows = append(g.Shows, f)
					}
				}
			}
			if diff := cmp.Diff(tc.want, g); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
