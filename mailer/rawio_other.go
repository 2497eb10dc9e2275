//go:build !linux

package mailer

import "net"

// newRawConn returns c: raw socket I/O (rawio_linux.go) is for Linux only.
func newRawConn(c net.Conn) net.Conn { return c }
