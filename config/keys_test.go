package config

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// minimalKeys sets the required keys only; oauthKeys makes it a client-secret OAuth output,
// against which the auth_* keys are valid. Parse dials nothing, so no server is needed.
func minimalKeys(oauth bool) MapGetter {
	g := MapGetter{
		"dest_host":  "smtp.example.com",
		"dest_email": "soc@example.com",
		"from_email": "fb@example.com",
		"secret_key": "a-long-enough-shared-secret",
	}
	if oauth {
		g["auth_mechanism"] = MechXOAuth2
		g["auth_token_url"] = "http://127.0.0.1:1/token"
		g["auth_client_id"] = "app"
		g["auth_client_secret"] = "client-secret"
		g["auth_scope"] = "https://outlook.office365.com/.default"
	}
	return g
}

// tokenKey reports whether key only applies with auth_mechanism xoauth2 or oauthbearer.
func tokenKey(key string) bool { return strings.HasPrefix(key, "auth_") && key != "auth_mechanism" }

// TestKeyDefaults: a key set to the default the table gives it parses to the same Config as
// the key left unset, so the table (and the README checked against it) says what Parse does.
func TestKeyDefaults(t *testing.T) {
	n := 0
	for _, k := range keyTable {
		if k.def == "" {
			continue
		}
		n++
		t.Run(k.name, func(t *testing.T) {
			base := minimalKeys(tokenKey(k.name))
			want, err := Parse(base)
			if err != nil {
				t.Fatalf("Parse(minimal keys): %v", err)
			}
			set := MapGetter{k.name: k.def}
			for key, v := range base {
				set[key] = v
			}
			got, err := Parse(set)
			if err != nil {
				t.Fatalf("Parse with %s %q, its default: %v", k.name, k.def, err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s %q is not what an unset %s means (-unset +set):\n%s", k.name, k.def, k.name, diff)
			}
		})
	}
	if n < 15 {
		t.Errorf("only %d keys have a default in the key table", n)
	}
}

// TestRequiredKeys: the keys the table marks required are the ones Parse cannot do without.
func TestRequiredKeys(t *testing.T) {
	if _, err := Parse(minimalKeys(false)); err != nil {
		t.Fatalf("Parse(only the required keys): %v", err)
	}
	var required []string
	for _, k := range keyTable {
		if k.required {
			required = append(required, k.name)
		}
	}
	if diff := cmp.Diff([]string{"dest_host", "from_email", "dest_email", "secret_key"}, required); diff != "" {
		t.Errorf("required keys (-want +got):\n%s", diff)
	}
	for _, key := range required {
		g := minimalKeys(false)
		delete(g, key)
		_, err := Parse(g)
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != key || !strings.Contains(ke.Reason, "is required") {
			t.Errorf("Parse without %s: error %v, want %s: is required", key, err, key)
		}
	}
}

// TestTokenKeysNeedOAuth: every auth_* key of the table is one auth.go knows as a token-source
// key, refused unless auth_mechanism is xoauth2 or oauthbearer.
func TestTokenKeysNeedOAuth(t *testing.T) {
	for _, k := range keyTable {
		if !tokenKey(k.name) {
			continue
		}
		g := minimalKeys(false)
		g[k.name] = "x"
		_, err := Parse(g)
		if err == nil || !strings.Contains(err.Error(), k.name+": is only used with auth_mechanism xoauth2 or oauthbearer") {
			t.Errorf("Parse with %s but no token mechanism: %v", k.name, err)
		}
	}
}

// readmeRow is one row of a key table of README.md (a table headed "| key | default | meaning |").
type readmeRow struct {
	section      string   // the heading the table is under
	keys         []string // the keys in backquotes in the first cell (`auth_*` is not a key)
	def, meaning string
	line         int
}

var readmeKey = regexp.MustCompile("`([a-z0-9_]+)`")

func readmeKeyRows(t *testing.T) []readmeRow {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows []readmeRow
	section, inTable := "", false
	for i, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "## ") || strings.HasPrefix(line, "### "):
			section = strings.TrimSpace(strings.TrimLeft(line, "#"))
		case line == "| key | default | meaning |":
			inTable = true
		case !strings.HasPrefix(line, "|"):
			inTable = false
		case inTable && strings.HasPrefix(line, "|---"):
		case inTable:
			cells := strings.Split(strings.Trim(line, "|"), " | ")
			if len(cells) != 3 {
				t.Fatalf("README.md:%d: a key table row with %d cells, want 3: %s", i+1, len(cells), line)
			}
			r := readmeRow{section: section, def: strings.TrimSpace(cells[1]), meaning: cells[2], line: i + 1}
			for _, m := range readmeKey.FindAllStringSubmatch(cells[0], -1) {
				r.keys = append(r.keys, m[1])
			}
			rows = append(rows, r)
		}
	}
	return rows
}

// TestKeyTableMatchesREADME keeps the key table and the README's key tables from drifting:
// every key has a row in the section the table names, every README row is a key Parse reads,
// and each row's default and "Never logged" agree with the table.
func TestKeyTableMatchesREADME(t *testing.T) {
	rows := readmeKeyRows(t)
	if len(rows) < 30 {
		t.Fatalf("found %d rows in README.md's key tables: is the table header still \"| key | default | meaning |\"?", len(rows))
	}
	byName := make(map[string]keyDef)
	for _, k := range keyTable {
		byName[k.name] = k
	}
	documented := make(map[string]bool) // key -> has a row in its own section
	for _, r := range rows {
		for _, name := range r.keys {
			k, ok := byName[name]
			if !ok {
				t.Errorf("README.md:%d documents %s, which is not in the key table", r.line, name)
				continue
			}
			documented[name] = documented[name] || r.section == k.doc
			switch {
			case k.required && r.def != "(required)":
				t.Errorf("README.md:%d: %s's default reads %q, want (required)", r.line, name, r.def)
			case k.def != "" && !strings.HasPrefix(r.def, "`"+k.def+"`"):
				t.Errorf("README.md:%d: %s's default reads %q, want `%s`", r.line, name, r.def, k.def)
			case !k.required && k.def == "" && (r.def == "(required)" || strings.HasPrefix(r.def, "`")):
				t.Errorf("README.md:%d: %s's default reads %q, but the key has none", r.line, name, r.def)
			}
			if logged := !strings.Contains(r.meaning, "Never logged"); logged == k.secret {
				t.Errorf("README.md:%d: %s is secret=%v in the key table; its row must say \"Never logged\" exactly when it is secret", r.line, name, k.secret)
			}
		}
	}
	for _, k := range keyTable {
		if !documented[k.name] {
			t.Errorf("key %s has no row in README.md's key table under %q", k.name, k.doc)
		}
	}
}

// TestDerivedLists: Keys and SecretKeys are the table's, and the secrets are the keys whose
// values the plugin must never print.
func TestDerivedLists(t *testing.T) {
	if len(Keys) != len(keyTable) {
		t.Fatalf("Keys has %d entries, the key table %d", len(Keys), len(keyTable))
	}
	want := map[string]bool{"password": true, "secret_key": true, "auth_client_secret": true}
	if diff := cmp.Diff(want, SecretKeys); diff != "" {
		t.Errorf("SecretKeys (-want +got):\n%s", diff)
	}
}
