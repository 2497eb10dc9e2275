package config

import "strings"

// Provider is a mail provider whose published limits smtpout knows (README, "Provider limits
// and quota replies"): when dest_host is one of its hosts, max_connections defaults to what
// it allows and `smtpout check` prints its limits.
type Provider struct {
	// Name is how the provider is named in the effective configuration and in check.
	Name string
	// Hosts are its submission hosts, lower case.
	Hosts []string
	// MaxConnections is max_connections when the key is unset.
	MaxConnections int
	// PerMinute is the most messages a minute it takes from one mailbox, 0 when it publishes
	// no such number.
	PerMinute int
	// Limits are its published limits, one per line, for check.
	Limits []string
}

// Providers are the mail providers smtpout knows the limits of.
//
// Exchange Online refuses a fourth concurrent connection per mailbox (432 4.3.2), so 3.
// Google publishes no number of concurrent SMTP connections for Gmail or its SMTP relay; its
// binding limit is the recipients per rolling day (about 2,000 per user, so 1.4 a minute on
// average), which one pipelined connection covers hundreds of times over, and it answers
// bursts of parallel sessions with 421 4.7.0 "try again later". 2 connections keep a second
// one for when the first is slow, and half our general default.
var Providers = []Provider{
	{
		Name:           "Exchange Online",
		Hosts:          []string{"smtp.office365.com"},
		MaxConnections: 3,
		PerMinute:      30,
		Limits: []string{
			"3 concurrent connections per mailbox (a fourth gets 432 4.3.2 Concurrent connections limit exceeded)",
			"30 messages per minute per mailbox (the excess is delayed)",
			"10,000 recipients per rolling 24 h (then 554 5.2.0 ...SubmissionQuotaExceededException until the window rolls)",
			"500 recipients per message",
			"sent mail is kept in Sent Items (554 5.2.2 mailbox full when full); repeated errors throttle the sender (550 5.2.251-5.2.255)",
		},
	},
	{
		Name:           "Gmail",
		Hosts:          []string{"smtp.gmail.com", "smtp-relay.gmail.com"},
		MaxConnections: 2,
		Limits: []string{
			"about 2,000 recipients per user per rolling day (then 550 5.4.5 Daily user sending limit exceeded, up to 24 h to recover; accounts over the limits may be suspended)",
			"SMTP relay: 550 5.4.5 Daily SMTP relay limit exceeded, 450 4.2.1 Peak SMTP relay limit exceeded",
			"no published number of concurrent connections",
		},
	},
}

// ProviderFor returns the provider whose submission host is host (any case), if smtpout
// knows it.
func ProviderFor(host string) (Provider, bool) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, p := range Providers {
		for _, h := range p.Hosts {
			if h == host {
				return p, true
			}
		}
	}
	return Provider{}, false
}
