package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/fbconf"
)

// exchangeMaxRecipients is Exchange Online's limit of recipients per message.
const exchangeMaxRecipients = 500

// providerReport prints, for an output whose dest_host is a provider smtpout knows, the
// provider's published limits and a warning for each way the configuration can exceed them.
// It returns the number of warnings.
func providerReport(w io.Writer, o fbconf.Output, cfg config.Config) (warnings int) {
	p, ok := config.ProviderFor(cfg.Host)
	if !ok {
		return 0
	}
	fmt.Fprintf(w, "  %s: %s limits (published):\n", o.Label(), p.Name)
	for _, l := range p.Limits {
		fmt.Fprintf(w, "    - %s\n", l)
	}
	warn := func(format string, args ...any) {
		fmt.Fprintf(w, "  [ warn] %s: %s\n", o.Label(), fmt.Sprintf(format, args...))
		warnings++
	}
	if cfg.MaxConnections > p.MaxConnections {
		warn("max_connections %d is above the %d connections this output uses for %s by default: the extra ones may be refused (Exchange answers 432 4.3.2; the plugin then opens fewer)",
			cfg.MaxConnections, p.MaxConnections, p.Name)
	}
	// digest_window is a guard too: a storm costs one email per group per window.
	switch {
	case cfg.MaxEmailsPerMinute == 0 && cfg.DigestOn():
	case cfg.MaxEmailsPerMinute == 0 && p.PerMinute > 0:
		warn("no max_emails_per_minute and no digest_window: a storm of records runs into %s's %d messages per minute and then its daily recipient quota; set digest_window (one email per group per window) or max_emails_per_minute %d or less",
			p.Name, p.PerMinute, p.PerMinute)
	case cfg.MaxEmailsPerMinute == 0:
		warn("no max_emails_per_minute and no digest_window: a storm of records exhausts %s's daily sending limit within minutes, and nothing more is sent for up to a day; set digest_window (one email per group per window) or max_emails_per_minute (2,000 recipients a day is about 1 email a minute to one recipient)",
			p.Name)
	case p.PerMinute > 0 && cfg.MaxEmailsPerMinute > p.PerMinute:
		warn("max_emails_per_minute %d is above %s's %d messages per minute", cfg.MaxEmailsPerMinute, p.Name, p.PerMinute)
	}
	if n := len(cfg.To) + len(cfg.Cc) + len(cfg.Bcc); p.Name == "Exchange Online" && n > exchangeMaxRecipients {
		warn("%d recipients per email: Exchange Online takes at most %d per message", n, exchangeMaxRecipients)
	}
	if !unlimitedRetries(o.Keys["retry_limit"]) {
		warn("records hit by a quota reply wait in Fluent Bit's retry queue: set Retry_Limit no_limits in this [OUTPUT] so none is dropped while the quota lasts")
	}
	return warnings
}

// unlimitedRetries reports whether a Retry_Limit value lets Fluent Bit retry a chunk for
// hours: no_limits or false, or a large number.
func unlimitedRetries(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "no_limits", "false":
		return true
	}
	n, err := strconv.Atoi(v)
	return err == nil && n >= 100
}
