package fbconf

import (
	"fmt"
	"sort"
	"strings"
)

// CoreOutputKeys are the keys Fluent Bit core takes for every output, whatever the plugin:
// they never reach a Go plugin, so they are never "unknown". Keys starting with one of
// CoreOutputPrefixes are core keys too.
var CoreOutputKeys = []string{
	"name", "match", "match_regex", "alias", "log_level", "log_suppress_interval",
	"retry_limit", "workers", "host", "port", "ipv6", "keepalive", "keepalive_timeout",
	"tls", "processors",
}

// CoreOutputPrefixes are prefixes of core key families: tls.verify, tls.ca_file, net.*,
// storage.* ...
var CoreOutputPrefixes = []string{"tls.", "net.", "storage."}

// fluentBit5Prefix starts every key that Fluent Bit 5.x keeps for its own OAuth 2.0 client
// (oauth2.enable, oauth2_x ... case-insensitive): such a key never reaches a Go plugin, and
// one that 5.x does not know stops it at start-up. 4.2 passes it on like any other key.
const fluentBit5Prefix = "oauth2"

// isCore reports whether key is taken by Fluent Bit core.
func isCore(key string) bool {
	for _, k := range CoreOutputKeys {
		if key == k {
			return true
		}
	}
	for _, p := range CoreOutputPrefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// UnknownKeys returns a warning for every key of o that is neither one of known (the plugin's
// keys, e.g. config.Keys) nor a Fluent Bit core key, with a "did you mean" suggestion when a
// known key is close. The warnings are ordered by line.
func (o Output) UnknownKeys(known []string) []Warning {
	var keys []string
	for k := range o.KeyPos {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		pi, pj := o.KeyPos[keys[i]], o.KeyPos[keys[j]]
		if pi.File != pj.File {
			return pi.File < pj.File
		}
		if pi.Line != pj.Line {
			return pi.Line < pj.Line
		}
		return keys[i] < keys[j]
	})
	var out []Warning
	for _, k := range keys {
		if isCore(k) || contains(known, k) {
			continue
		}
		if strings.HasPrefix(strings.ToLower(k), fluentBit5Prefix) {
			out = append(out, Warning{Pos: o.KeyPos[k], Msg: fmt.Sprintf("key %q starts with %q: Fluent Bit 5.x keeps such keys for its own OAuth 2.0 client and refuses to start on one it does not know; the plugin's OAuth keys start with auth_", k, fluentBit5Prefix)})
			continue
		}
		msg := fmt.Sprintf("unknown key %q: the plugin ignores it", k)
		candidates := append(append([]string{}, known...), CoreOutputKeys...)
		if s := Suggest(k, candidates); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		out = append(out, Warning{Pos: o.KeyPos[k], Msg: msg})
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Suggest returns the candidate closest to key, or "" when none is close enough to be a
// likely typo: an edit distance of at most 1 for short keys, 2 from 5 characters, 3 from 12,
// counting - and _ as the same character.
func Suggest(key string, candidates []string) string {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	k := norm(key)
	limit := 1
	switch {
	case len(k) >= 12:
		limit = 3
	case len(k) >= 5:
		limit = 2
	}
	best, bestD, bestP := "", limit+1, 0
	for _, c := range candidates {
		nc := norm(c)
		d, p := distance(k, nc), commonPrefix(k, nc)
		// On a tie, the candidate sharing the longer prefix wins: bc_email -> bcc_email.
		if d < bestD || d == bestD && best != "" && p > bestP {
			best, bestD, bestP = c, d, p
		}
	}
	return best
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// distance is the Damerau-Levenshtein (optimal string alignment) distance between a and b:
// insertions, deletions, substitutions and transpositions of adjacent bytes each cost 1.
func distance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
