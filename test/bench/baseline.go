package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wneessen/go-mail"

	"github.com/smtpout/smtpout/chunk"
	"github.com/smtpout/smtpout/output"
)

// baselineArgs is what the parent hands the baseline process (as JSON in an environment
// variable, so the child's flags stay the parent's).
type baselineArgs struct {
	Addr        string // host:port of the sink (or the delay proxy)
	CAFile      string
	StartTLS    bool
	Chunk       string // path of the chunk file
	Emails      int
	Concurrency int
	Warmup      int
	User, Pass  string
	Secret      string
	From, To    string
	// Reuse: each sender dials once and sends every email on that connection (go-mail's
	// Send, with its NOOP and RSET per message), instead of DialAndSend per email.
	Reuse bool
	// NoAuth: send without AUTH (a server that offers none).
	NoAuth bool
}

// baselineReport is what the baseline process prints on its standard output (one JSON line).
type baselineReport struct {
	Emails     int64
	Failed     int64
	FirstError string
	Ns         int64
	UtimeUs    int64
	StimeUs    int64
	IdleUs     int64 // CPU spent by the idle process over as long as the run lasted
	Allocs     int64
	HWMKiB     int64
	Goroutines int64
}

const baselineEnv = "SMTPOUT_BENCH_BASELINE"

// baselineMain is the baseline sender: the way the peers send, a new connection, TLS
// handshake and AUTH per email through go-mail's DialAndSend, from Concurrency goroutines
// (each with its own go-mail Client, as a client serialises its sends); with Reuse, each
// client keeps one connection for all its emails (go-mail's Send). Each email carries
// the same JSON payload and signature smtpout would send, built per email (JSON encoding and
// HMAC included, as a peer marshals its alert); records are decoded before the clock starts.
func baselineMain(raw string) error {
	var a baselineArgs
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		return fmt.Errorf("baseline arguments: %w", err)
	}
	data, err := os.ReadFile(a.Chunk)
	if err != nil {
		return err
	}
	var recs []output.Record
	d := chunk.NewDecoder(data)
	for {
		e, err := d.Next()
		if err != nil {
			break
		}
		recs = append(recs, output.Record{Time: e.Time, Fields: e.Record})
	}
	if len(recs) == 0 {
		return errors.New("baseline: no records in the chunk")
	}
	caPEM, err := os.ReadFile(a.CAFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("baseline: no CA certificate")
	}
	host, portText, err := net.SplitHostPort(a.Addr)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return err
	}
	opts := []mail.Option{
		mail.WithPort(port),
		mail.WithTLSConfig(&tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}),
		mail.WithTimeout(30 * time.Second),
		mail.WithHELO("bench.local"),
	}
	if !a.NoAuth {
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthPlain), mail.WithUsername(a.User), mail.WithPassword(a.Pass))
	}
	if a.StartTLS {
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	} else {
		opts = append(opts, mail.WithSSL())
	}
	secret := []byte(a.Secret)

	var (
		next     atomic.Int64
		failed   atomic.Int64
		errOnce  sync.Once
		firstErr string
	)
	send := func(c *mail.Client, i int) {
		deliver := c.DialAndSend
		if a.Reuse {
			deliver = c.Send
		}
		rec := recs[i%len(recs)]
		rec.Tag = "bench.baseline." + strconv.Itoa(i/len(recs))
		payload, err := output.Payload(rec, "date")
		if err == nil {
			m := mail.NewMsg(mail.WithNoDefaultUserAgent())
			if err = m.From(a.From); err == nil {
				err = m.To(a.To)
			}
			m.Subject("Fluent Bit: " + rec.Tag)
			m.SetDateWithValue(rec.Time)
			m.SetMessageID()
			m.SetGenHeader("X-Fluent-Tag", rec.Tag)
			m.SetGenHeader("X-Smtpout-Signature", output.Sign(payload, secret))
			m.SetBodyString(mail.TypeTextPlain, string(payload))
			if err == nil {
				err = deliver(m)
			}
		}
		if err != nil {
			failed.Add(1)
			errOnce.Do(func() { firstErr = err.Error() })
		}
	}
	run := func(n int) error {
		next.Store(0)
		var wg sync.WaitGroup
		var setupErr error
		var setupOnce sync.Once
		for range a.Concurrency {
			c, err := mail.NewClient(host, opts...)
			if err != nil {
				setupOnce.Do(func() { setupErr = err })
				break
			}
			if a.Reuse {
				if err := c.DialWithContext(context.Background()); err != nil {
					setupOnce.Do(func() { setupErr = err })
					break
				}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if a.Reuse {
					defer c.Close()
				}
				for {
					i := int(next.Add(1) - 1)
					if i >= n {
						return
					}
					send(c, i)
				}
			}()
		}
		wg.Wait()
		return setupErr
	}

	if a.Warmup > 0 {
		if err := run(a.Warmup); err != nil {
			return err
		}
		failed.Store(0)
	}
	idle0 := cpuUs()
	idleStart := time.Now()
	time.Sleep(500 * time.Millisecond)
	idleRate := float64(cpuUs()-idle0) / float64(time.Since(idleStart).Nanoseconds())

	allocs0 := readAllocs()
	cpu0 := rusage()
	t0 := time.Now()
	if err := run(a.Emails); err != nil {
		return err
	}
	ns := time.Since(t0).Nanoseconds()
	cpu1 := rusage()
	allocs1 := readAllocs()
	hwm, _, _ := procStatus(os.Getpid())
	rep := baselineReport{
		Emails:     int64(a.Emails),
		Failed:     failed.Load(),
		FirstError: firstErr,
		Ns:         ns,
		UtimeUs:    tvUs(cpu1.Utime) - tvUs(cpu0.Utime),
		StimeUs:    tvUs(cpu1.Stime) - tvUs(cpu0.Stime),
		IdleUs:     int64(idleRate * float64(ns)),
		Allocs:     int64(allocs1 - allocs0),
		HWMKiB:     hwm,
		Goroutines: int64(readGoroutines()),
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}

func rusage() syscall.Rusage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru
}

func tvUs(tv syscall.Timeval) int64 { return tv.Sec*1_000_000 + tv.Usec }

func cpuUs() int64 {
	ru := rusage()
	return tvUs(ru.Utime) + tvUs(ru.Stime)
}
