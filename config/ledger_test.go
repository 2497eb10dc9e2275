package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseDurabilityKeys(t *testing.T) {
	dir := t.TempDir()
	c, err := Parse(base(map[string]string{
		"ledger_dir": dir, "ledger_max_entries": "250000", "ledger_max_age": "2d", "flush_timeout": "1500ms",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Durability{LedgerDir: dir, LedgerMaxEntries: 250_000, LedgerMaxAge: 48 * time.Hour, FlushTimeout: 1500 * time.Millisecond}
	if diff := cmp.Diff(want, c.Durability); diff != "" {
		t.Errorf("Durability (-want +got):\n%s", diff)
	}
}

func TestParseDurabilityKeysRejected(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string][]string{
		"ledger_dir":         {filepath.Join(dir, "missing"), file},
		"ledger_max_entries": {"0", "999", "many", "50000001"},
		"ledger_max_age":     {"0", "-1h", "forever"},
		"flush_timeout":      {"0", "-1s", "soon"},
	}
	if os.Geteuid() != 0 { // root writes anywhere
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		tests["ledger_dir"] = append(tests["ledger_dir"], ro)
	}
	for key, values := range tests {
		for _, v := range values {
			t.Run(key+"/"+v, func(t *testing.T) {
				_, err := Parse(base(map[string]string{key: v}))
				assertKeyError(t, err, key)
			})
		}
	}
}
