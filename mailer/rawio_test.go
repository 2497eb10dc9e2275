package mailer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/textproto"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/testsupport/testcert"
)

// trickleConn writes every byte in its own write (TCP_NODELAY is on: its own TCP segment),
// a little apart, so every TLS record and every reply reaches the client in pieces.
type trickleConn struct {
	net.Conn
	gap time.Duration
}

func (c trickleConn) Write(p []byte) (int, error) {
	for i := range p {
		if _, err := c.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
		time.Sleep(c.gap)
	}
	return len(p), nil
}

type trickleListener struct {
	net.Listener
	gap time.Duration
}

func (l trickleListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return trickleConn{Conn: c, gap: l.gap}, nil
}

// startSlowScripted is startScripted with replies that come slowly: one reply line at a time
// replyGap apart, and with byteGap set, every byte of the TLS stream in its own TCP segment.
// reply is the script (see scripted.reply); nil answers every command as a plain server would.
func startSlowScripted(t *testing.T, ehlo string, replyGap, byteGap time.Duration, reply func(string, int) string) *scripted {
	t.Helper()
	cert := testcert.New(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var l net.Listener = inner
	if byteGap > 0 {
		l = trickleListener{Listener: inner, gap: byteGap}
	}
	l = tls.NewListener(l, cert.ServerTLS())
	if reply == nil {
		reply = func(string, int) string { return "" }
	}
	s := &scripted{addr: inner.Addr().String(), cert: cert, reply: reply,
		ehlo: ehlo, done: make(chan struct{}, 100), replyGap: replyGap}
	acceptLoop(t, l, &s.mu, &s.conns, func(c net.Conn) {
		s.serve(c)
		s.done <- struct{}{}
	})
	return s
}

// TestRepliesThatTrickle: the session reads its socket with raw system calls (rawConn) and
// its replies with its own reader (replyReader), so replies that come slowly, one line at a
// time even to pipelined commands and to the lines of one multi-line reply, or cut into one
// TCP segment per byte (TLS records included), must still be read whole and in order, in
// every way a transaction can be written, with each message's outcome its own and the
// server's texts intact: a multi-line refusal of one recipient (the other accepted), a
// multi-line acceptance, and a multi-line temporary refusal of a sender.
func TestRepliesThatTrickle(t *testing.T) {
	script := map[string]string{
		"RCPT TO:<b@example.com>":      "550-5.1.1 <b@example.com>: Recipient address rejected\r\n550 5.1.1 User unknown in virtual mailbox table",
		"RCPT TO:<c@example.com>":      "250-2.1.5 Ok\r\n250 2.1.5 recipient ok",
		"MAIL FROM:<slow@example.com>": "451-4.3.0 Error: queue file write error\r\n451 4.3.0 try again later",
	}
	m4 := msg("m4")
	m4.From = "slow@example.com"
	type result struct {
		Outcome  Outcome
		Step     Step
		Code     int
		Enhanced string
		Text     string
		Rejected []RecipientError
	}
	want := []result{
		{Outcome: Delivered},
		{Outcome: Delivered, Rejected: []RecipientError{{Address: "b@example.com", Code: 550, EnhancedCode: "5.1.1",
			Message: "<b@example.com>: Recipient address rejected; 5.1.1 User unknown in virtual mailbox table"}}},
		{Outcome: Delivered},
		{Outcome: Retry, Step: StepMAIL, Code: 451, Enhanced: "4.3.0", Text: "Error: queue file write error; 4.3.0 try again later"},
	}
	for _, srv := range []struct {
		name              string
		replyGap, byteGap time.Duration
	}{
		{"one reply line at a time, 3 ms apart", 3 * time.Millisecond, 0},
		{"every byte its own TCP segment", 0, 50 * time.Microsecond},
	} {
		for _, mode := range modes {
			t.Run(srv.name+"/"+mode.name, func(t *testing.T) {
				s := startSlowScripted(t, "PIPELINING CHUNKING", srv.replyGap, srv.byteGap,
					func(line string, _ int) string { return script[line] })
				m := newMailer(t, testConfig(t, s.addr, s.cert, false), mode.opts...)
				msgs := []Message{msg("m1"), msg("m2", "a@example.com", "b@example.com"), msg("m3", "c@example.com"), m4}
				var got []result
				for _, r := range m.Send(context.Background(), msgs) {
					g := result{Outcome: r.Outcome, Rejected: r.Rejected}
					var se *StepError
					if errors.As(r.Err, &se) {
						g.Step, g.Code, g.Enhanced, g.Text = se.Step, se.Code, se.EnhancedCode, se.Message
					}
					got = append(got, g)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("results (-want +got):\n%s", diff)
				}
				s.mu.Lock()
				stored := subjects(s.msgs)
				s.mu.Unlock()
				if diff := cmp.Diff([]string{"m1", "m2", "m3"}, stored); diff != "" {
					t.Errorf("messages stored (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// tcpPair returns the two ends of a loopback TCP connection: the client end wrapped as a
// session wraps it (newRawConn) and the server end as it is.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	client = newRawConn(c)
	if _, ok := client.(*rawConn); !ok {
		t.Fatalf("newRawConn(%T) = %T, want *rawConn", c, client)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestRawConn: what net.Conn promises and the session relies on, through raw system calls:
// a reply cut into segments read whole, a write larger than the socket buffers (the send
// waits in the poller), the deadline (a timeout error, as timeout() recognises it) and the
// cancellation that sets a past deadline, and a peer that hung up (io.EOF, then an error on
// write, never a signal).
func TestRawConn(t *testing.T) {
	t.Run("a reply cut into segments", func(t *testing.T) {
		client, server := tcpPair(t)
		reply := "250-first line\r\n250-second\r\n250 last\r\n"
		go func() {
			for i := range len(reply) {
				server.Write([]byte{reply[i]})
				time.Sleep(100 * time.Microsecond)
			}
		}()
		_ = client.SetDeadline(time.Now().Add(10 * time.Second))
		code, text, err := textproto.NewReader(bufio.NewReader(client)).ReadResponse(250)
		if err != nil {
			t.Fatal(err)
		}
		if code != 250 {
			t.Errorf("ReadResponse code = %d, want 250", code)
		}
		if diff := cmp.Diff("first line\nsecond\nlast", text); diff != "" {
			t.Errorf("ReadResponse text (-want +got):\n%s", diff)
		}
	})
	t.Run("a write larger than the socket buffers", func(t *testing.T) {
		client, server := tcpPair(t)
		big := make([]byte, 16<<20)
		for i := range big {
			big[i] = byte(i % 251)
		}
		var got []byte
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(20 * time.Millisecond) // let the client fill the buffers first
			got, _ = io.ReadAll(io.LimitReader(server, int64(len(big))))
		}()
		_ = client.SetDeadline(time.Now().Add(30 * time.Second))
		n, err := client.Write(big)
		if err != nil || n != len(big) {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(big))
		}
		wg.Wait()
		if len(got) != len(big) || string(got) != string(big) {
			t.Errorf("the server read %d bytes, not the %d written, or not the same", len(got), len(big))
		}
	})
	t.Run("deadline", func(t *testing.T) {
		client, _ := tcpPair(t)
		_ = client.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := client.Read(make([]byte, 10))
		if !timeout(err) {
			t.Errorf("Read after the deadline = %v, want a timeout", err)
		}
	})
	t.Run("cancelled while waiting", func(t *testing.T) {
		client, _ := tcpPair(t)
		_ = client.SetDeadline(time.Now().Add(time.Minute))
		go func() {
			time.Sleep(20 * time.Millisecond)
			_ = client.SetDeadline(time.Unix(1, 0)) // what session.watch does
		}()
		start := time.Now()
		_, err := client.Read(make([]byte, 10))
		if !timeout(err) || time.Since(start) > 30*time.Second {
			t.Errorf("Read cancelled by a past deadline = %v after %v, want a timeout at once", err, time.Since(start))
		}
	})
	t.Run("reads and writes allocate nothing", func(t *testing.T) {
		client, server := tcpPair(t)
		_ = client.SetDeadline(time.Now().Add(30 * time.Second))
		_ = server.SetDeadline(time.Now().Add(30 * time.Second))
		out, in := []byte("MAIL FROM:<from@example.com>\r\n"), make([]byte, 64)
		roundTrip := func() {
			if _, err := client.Write(out); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(server, in[:len(out)]); err != nil {
				t.Fatal(err)
			}
			if _, err := server.Write(out); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(client, in[:len(out)]); err != nil {
				t.Fatal(err)
			}
		}
		if n := testing.AllocsPerRun(100, roundTrip); n != 0 {
			t.Errorf("a write and a read on the raw connection allocated %v times, want 0", n)
		}
	})
	t.Run("peer hung up", func(t *testing.T) {
		client, server := tcpPair(t)
		server.Close()
		_ = client.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := client.Read(make([]byte, 10)); !errors.Is(err, io.EOF) {
			t.Errorf("Read after the peer closed = %v, want io.EOF", err)
		}
		var err error
		for i := 0; i < 100 && err == nil; i++ { // the first write may still be accepted
			_, err = client.Write([]byte("RSET\r\n"))
			time.Sleep(time.Millisecond)
		}
		var ne *net.OpError
		if !errors.As(err, &ne) || ne.Op != "write" {
			t.Errorf("Write after the peer closed = %v, want a *net.OpError from write", err)
		}
	})
}
