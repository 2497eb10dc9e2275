package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sort"
	"testing"
	"time"
)

// echoServer echoes every byte back until the client closes.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestDelayProxy checks that the proxy delivers every byte in order, and that a round trip
// through it takes at least the RTT but not much more (the simulated link is the RTT).
func TestDelayProxy(t *testing.T) {
	for _, rtt := range []time.Duration{0, 4 * time.Millisecond, 10 * time.Millisecond} {
		t.Run(rtt.String(), func(t *testing.T) {
			p, err := StartDelayProxy(echoServer(t), rtt)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			start := time.Now()
			c, err := net.Dial("tcp", p.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var rtts []time.Duration
			var sent, got bytes.Buffer
			buf := make([]byte, 64<<10)
			for i := range 20 {
				msg := []byte(fmt.Sprintf("line %d %s\r\n", i, bytes.Repeat([]byte{'x'}, i*100)))
				sent.Write(msg)
				t0 := time.Now()
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				for got.Len() < sent.Len() {
					_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
					n, err := c.Read(buf)
					if err != nil {
						t.Fatalf("read after %d of %d bytes: %v", got.Len(), sent.Len(), err)
					}
					got.Write(buf[:n])
				}
				rtts = append(rtts, time.Since(t0))
				if i == 0 && time.Since(start) < 2*rtt {
					t.Errorf("connect plus the first round trip took %v, want >= %v (handshake + RTT)", time.Since(start), 2*rtt)
				}
			}
			if !bytes.Equal(sent.Bytes(), got.Bytes()) {
				t.Fatalf("echo through the proxy differs: sent %d bytes, got %d", sent.Len(), got.Len())
			}
			sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
			median := rtts[len(rtts)/2]
			t.Logf("rtt %v: min %v median %v max %v", rtt, rtts[0], median, rtts[len(rtts)-1])
			if rtts[0] < rtt {
				t.Errorf("fastest round trip %v, want >= %v", rtts[0], rtt)
			}
			// Loose on purpose (a loaded machine must not fail it): catches a delay applied twice.
			if limit := 2*rtt + 5*time.Millisecond; median > limit {
				t.Errorf("median round trip %v, want <= %v", median, limit)
			}
		})
	}
}
