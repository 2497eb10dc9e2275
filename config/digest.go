package config

// Digests (issue 19): the keys that turn a storm of records into one email per group per
// window, their defaults and parsing, kept apart from the rest of Parse (their keys are rows
// of the key table, keys.go).

import (
	"strings"
	"time"
)

// Defaults and bounds of the digest keys.
const (
	// DefaultDigestMaxRecords is how many records one digest email carries at most
	// (digest_max_records); a group with more waiting gets several digests.
	DefaultDigestMaxRecords = 1000
	// MaxDigestMaxRecords bounds digest_max_records.
	MaxDigestMaxRecords = 100_000
)

// Digests is the part of Config set by the digest keys. DigestWindow 0 turns digests off.
type Digests struct {
	// DigestWindow is digest_window: a group's further records wait until this long after the
	// group's last email, then go out as one digest; 0 (the default) sends every record alone.
	DigestWindow time.Duration
	// DigestBy are the digest_by record accessors that form a group, each parsed with
	// ParseTemplate (Raw is the key as written, such as "$host"); none: one group per output
	// instance.
	DigestBy []Template
	// DigestMaxRecords bounds the records of one digest email (digest_max_records).
	DigestMaxRecords int
}

// DigestOn reports whether digests are on (digest_window set).
func (d Digests) DigestOn() bool { return d.DigestWindow > 0 }

// parseDigests reads the digest keys into c and adds a warning to warnings when digest_by or
// a digest_max_records other than the default is set without digest_window.
func (p *parser) parseDigests(c *Digests, warnings *[]string) {
	if v := p.value("digest_window"); v != "" {
		d, err := parseDuration(v)
		if err != nil || d < 0 {
			p.fail("digest_window", v, "is not a duration such as 30s, 10m or 1h (0 turns digests off)")
		} else {
			c.DigestWindow = d
		}
	}
	if v := p.value("digest_by"); v != "" {
		c.DigestBy = p.digestBy("digest_by", v)
	}
	c.DigestMaxRecords = p.integer("digest_max_records", DefaultDigestMaxRecords, 1, MaxDigestMaxRecords)
	if c.DigestWindow == 0 {
		const off = " has no effect without digest_window: every record is sent as its own email"
		if len(c.DigestBy) > 0 {
			*warnings = append(*warnings, "digest_by"+off)
		}
		if c.DigestMaxRecords != DefaultDigestMaxRecords {
			*warnings = append(*warnings, "digest_max_records"+off)
		}
	}
}

// digestBy parses a comma-separated list of record accessors ($host, $detect['cat'],
// $TAG[1]); each entry must be exactly one accessor. Commas inside quotes belong to the
// accessor.
func (p *parser) digestBy(key, v string) []Template {
	var out []Template
	for i, item := range splitAccessors(v) {
		item = strings.TrimSpace(item)
		if item == "" {
			p.fail(key, v, "entry %d is empty (a stray comma?)", i+1)
			continue
		}
		t, err := ParseTemplate(item)
		if err != nil {
			p.fail(key, v, "entry %q: %v", item, err)
			continue
		}
		if len(t.Tokens) != 1 || t.Tokens[0].Kind == Literal {
			p.fail(key, v, "entry %q must be one record accessor such as $host or $detect['cat']", item)
			continue
		}
		out = append(out, t)
	}
	return out
}

// splitAccessors splits s at commas outside quotes.
func splitAccessors(s string) []string {
	var out []string
	var quote byte
	start := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == ',':
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// digestByText writes the digest_by accessors as a configuration would.
func digestByText(ts []Template) string {
	raw := make([]string, len(ts))
	for i, t := range ts {
		raw[i] = t.Raw
	}
	return strings.Join(raw, ",")
}
