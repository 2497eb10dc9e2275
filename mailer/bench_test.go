package mailer

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/smtpout/smtpout/testsupport/testcert"
)

// startSink starts a lean implicit-TLS SMTP server on 127.0.0.1 that answers like Postfix's
// smtp-sink, the server issue 22 measures against: PIPELINING and no CHUNKING, Postfix's
// reply texts, and every reply to one flight of commands in one write (it writes when it
// has read all the client sent, so a body and the next envelope get their five replies in
// one segment). It stores nothing and allocates nothing per message, so a benchmark's
// allocations are the client's (and TLS's). It returns the address and the certificate.
func startSink(tb testing.TB) (addr string, cert *testcert.Cert) {
	tb.Helper()
	cert = testcert.New(tb)
	l, err := tls.Listen("tcp", "127.0.0.1:0", cert.ServerTLS())
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serveSink(c)
			}()
		}
	}()
	return l.Addr().String(), cert
}

func serveSink(c net.Conn) {
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriterSize(c, 4096)
	w.WriteString("220 localhost ESMTP sink\r\n")
	w.Flush()
	inData := false
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		switch {
		case inData:
			if string(line) == ".\r\n" {
				inData = false
				w.WriteString("250 2.0.0 Ok: queued as 4ZYBD1c2Lpz3\r\n")
			}
		case len(line) < 4:
			w.WriteString("500 5.5.2 Error: bad syntax\r\n")
		default:
			switch string(line[:4]) { // the client writes its verbs in capitals
			case "EHLO":
				w.WriteString("250-localhost\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n")
			case "MAIL":
				w.WriteString("250 2.1.0 Ok\r\n")
			case "RCPT":
				w.WriteString("250 2.1.5 Ok\r\n")
			case "DATA":
				w.WriteString("354 End data with <CR><LF>.<CR><LF>\r\n")
				inData = true
			case "RSET", "NOOP":
				w.WriteString("250 2.0.0 Ok\r\n")
			case "QUIT":
				w.WriteString("221 2.0.0 Bye\r\n")
				w.Flush()
				return
			default:
				w.WriteString("502 5.5.2 Error: command not recognized\r\n")
			}
		}
		if r.Buffered() == 0 {
			if w.Flush() != nil {
				return
			}
		}
	}
}

// BenchmarkSendToSink measures the mailer's own cost per email (one op is one email) on one
// reused implicit-TLS connection to startSink, in batches of 64 emails per Send as a flush
// hands them over, each with a Done callback as internal/pipeline sets one. The server runs
// in this process: its CPU is part of ns/op (read the difference between two builds, or
// count instructions with perf stat), its allocations are none but TLS's.
func BenchmarkSendToSink(b *testing.B) {
	addr, cert := startSink(b)
	m := benchMailer(b, addr, cert)
	one := benchMessage()
	done := 0
	one.Done = func(r Result) {
		if r.Outcome == Delivered {
			done++
		}
	}
	sendBatches(b, m, one, 64)
	if done != b.N+1 { // the warm-up email included
		b.Fatalf("Done called for %d delivered emails, want %d", done, b.N+1)
	}
	if d := m.Dials(); d != 1 {
		b.Errorf("Dials() = %d, want one connection for every email", d)
	}
}

// benchMailer is a Mailer for a benchmark against the server at addr; it is closed when the
// benchmark ends.
func benchMailer(b *testing.B, addr string, cert *testcert.Cert, opts ...Option) *Mailer {
	b.Helper()
	m, err := New(testConfig(b, addr, cert, false), opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// benchMessage is the benchmarks' email: msg's headers and about 2 KB of quoted-printable
// lines, as a rendered record's.
func benchMessage() Message {
	one := msg("bench")
	one.Data = append(one.Data, strings.Repeat(strings.Repeat("x", 74)+"=\r\n", 26)...)
	return one
}

// sendBatches sends b.N copies of one through m in Sends of size messages (one op is one
// email), after one unmeasured Send of one message that opens the connection.
func sendBatches(b *testing.B, m *Mailer, one Message, size int) {
	b.Helper()
	batch := make([]Message, size)
	for i := range batch {
		batch[i] = one
	}
	mustDeliverB(b, m.Send(context.Background(), batch[:1]))
	b.ReportAllocs()
	b.SetBytes(int64(len(one.Data)))
	b.ResetTimer()
	for i := 0; i < b.N; i += size {
		mustDeliverB(b, m.Send(context.Background(), batch[:min(size, b.N-i)]))
	}
	b.StopTimer()
}
