package config

// The durable delivery ledger (ledger_dir, issue 15) and the flush time budget
// (flush_timeout): their defaults and parsing, kept apart from the rest of Parse (their keys
// are rows of the key table, keys.go).

import (
	"os"
	"syscall"
	"time"
)

// Defaults of the ledger and flush-budget keys.
const (
	// DefaultLedgerMaxEntries is how many settled Message-IDs ledger_dir keeps per instance
	// (ledger_max_entries): a day at more than one email a second.
	DefaultLedgerMaxEntries = 100_000
	// DefaultLedgerMaxAge is how long ledger_dir keeps a settled Message-ID (ledger_max_age).
	DefaultLedgerMaxAge = 24 * time.Hour
	// DefaultFlushTimeout is how long flushes may go on once Fluent Bit got SIGTERM
	// (flush_timeout): past it, the records not yet sent go back to Fluent Bit as RETRY, so
	// a flush never holds up Fluent Bit's shutdown past its Grace (5 s by default).
	DefaultFlushTimeout = 3 * time.Second
	// FlushFinishSlack is how long a message already on the wire at the flush deadline may
	// take to get its reply before its connection is cut (the reply is then unknown and the
	// message is sent again: at-least-once).
	FlushFinishSlack = time.Second
	// MaxLedgerEntries bounds ledger_max_entries.
	MaxLedgerEntries = 50_000_000
)

// Durability is the part of Config set by the ledger and flush-budget keys.
type Durability struct {
	// LedgerDir is where the instance keeps its delivery ledger on disk (ledger_dir); ""
	// keeps it in memory only.
	LedgerDir string
	// LedgerMaxEntries and LedgerMaxAge bound the ledger on disk (ledger_max_entries,
	// ledger_max_age).
	LedgerMaxEntries int
	LedgerMaxAge     time.Duration
	// FlushTimeout is how long flushes may go on after a SIGTERM (flush_timeout).
	FlushTimeout time.Duration
}

// parseDurability reads the ledger and flush-budget keys into c.
func (p *parser) parseDurability(c *Durability) {
	c.LedgerDir = p.value("ledger_dir")
	if c.LedgerDir != "" {
		if fi, err := os.Stat(c.LedgerDir); err != nil {
			p.fail("ledger_dir", c.LedgerDir, "cannot be used: %v", unwrapPathError(err))
		} else if !fi.IsDir() {
			p.fail("ledger_dir", c.LedgerDir, "is not a directory")
		} else if err := syscall.Access(c.LedgerDir, 0x2|0x1); err != nil { // W_OK|X_OK
			p.fail("ledger_dir", c.LedgerDir, "is not writable: %v", err)
		}
	}
	c.LedgerMaxEntries = p.integer("ledger_max_entries", DefaultLedgerMaxEntries, 1000, MaxLedgerEntries)
	c.LedgerMaxAge = p.duration("ledger_max_age", DefaultLedgerMaxAge)
	c.FlushTimeout = p.duration("flush_timeout", DefaultFlushTimeout)
}
