// Package e2e holds the end-to-end tests of smtpout.so: they build the plugin and a small C
// host (host/host.c) that loads it exactly as Fluent Bit's Go proxy does, drive both against
// a real SMTP server (mailpit), and, when the environment variable FLUENT_BIT names a
// fluent-bit binary, run the same scenarios through Fluent Bit itself.
package e2e
