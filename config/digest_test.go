package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestParseDigests: digest_window in Fluent Bit time syntax (0 is off), digest_by as a list
// of record accessors (commas inside quotes are part of one), digest_max_records.
func TestParseDigests(t *testing.T) {
	key := func(raw string, path ...string) Template {
		return Template{Raw: raw, Tokens: []Token{{Kind: KeyToken, Path: path}}}
	}
	tests := []struct {
		name string
		keys map[string]string
		want Digests
	}{
		{"unset: off", nil, Digests{DigestMaxRecords: 1000}},
		{"0: off", map[string]string{"digest_window": "0"}, Digests{DigestMaxRecords: 1000}},
		{"window only: one group", map[string]string{"digest_window": "10s"}, Digests{DigestWindow: 10 * time.Second, DigestMaxRecords: 1000}},
		{"bare seconds", map[string]string{"digest_window": "90"}, Digests{DigestWindow: 90 * time.Second, DigestMaxRecords: 1000}},
		{"groups and a bound", map[string]string{
			"digest_window": "5m", "digest_by": " $host, $detect['cat'] ,$TAG[1]", "digest_max_records": "50",
		}, Digests{DigestWindow: 5 * time.Minute, DigestMaxRecords: 50, DigestBy: []Template{
			key("$host", "host"), key("$detect['cat']", "detect", "cat"),
			{Raw: "$TAG[1]", Tokens: []Token{{Kind: TagPartToken, Index: 1}}},
		}}},
		{"a comma inside quotes", map[string]string{"digest_window": "1m", "digest_by": `$m['a,b'],$n`},
			Digests{DigestWindow: time.Minute, DigestMaxRecords: 1000, DigestBy: []Template{key(`$m['a,b']`, "m", "a,b"), key("$n", "n")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(base(tc.keys))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tc.want, c.Digests); diff != "" {
				t.Errorf("Digests (-want +got):\n%s", diff)
			}
			if len(c.Warnings) != 0 {
				t.Errorf("warnings: %q", c.Warnings)
			}
		})
	}
}

// TestParseDigestsRejected: every bad digest key is an error naming the key.
func TestParseDigestsRejected(t *testing.T) {
	tests := map[string][]string{
		"digest_window":      {"-1s", "soon", "10x"},
		"digest_by":          {"host", "$host,,$cat", "$host,", "$", "$detect[cat]", "$host-$cat x", "web $host"},
		"digest_max_records": {"0", "-1", "many", "100001"},
	}
	for key, values := range tests {
		for _, v := range values {
			t.Run(key+"/"+v, func(t *testing.T) {
				_, err := Parse(base(map[string]string{"digest_window": "10s", key: v}))
				assertKeyError(t, err, key)
			})
		}
	}
}

// TestDigestKeysWithoutWindowWarn: digest_by or digest_max_records without digest_window
// does nothing, and start-up says so.
func TestDigestKeysWithoutWindowWarn(t *testing.T) {
	c, err := Parse(base(map[string]string{"digest_by": "$host", "digest_max_records": "10"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 2 || !strings.HasPrefix(c.Warnings[0], "digest_by has no effect without digest_window") ||
		!strings.HasPrefix(c.Warnings[1], "digest_max_records has no effect without digest_window") {
		t.Errorf("warnings = %q", c.Warnings)
	}
}
