package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/smtpout/smtpout/chunk"
)

// TestFluentBitEngineStallMeasure measures what Workers 0 costs (the configuration the
// README recommends with hot reload): the smtp output's flush then runs on Fluent Bit's
// engine thread, and every other output waits while it talks SMTP. One forward input feeds
// the smtp output (400 records to a server that takes 40 ms a reply) and Fluent Bit's http
// output (one record every 100 ms to a local HTTP server); it prints how late the http
// output's records arrived, with Workers 0 and with Workers 1. A measurement, not a check of
// timing: skipped unless SMTPOUT_MEASURE_STALL=1 (and FLUENT_BIT).
func TestFluentBitEngineStallMeasure(t *testing.T) {
	fluentBit(t)
	if os.Getenv("SMTPOUT_MEASURE_STALL") != "1" {
		t.Skip("skipped: a measurement; set SMTPOUT_MEASURE_STALL=1 to run it")
	}
	for _, workers := range []int{0, 1} {
		t.Run(fmt.Sprintf("Workers=%d", workers), func(t *testing.T) {
			fs := startFaultServer(t, faultOptions{delay: 40 * time.Millisecond})
			arrivals := startArrivalServer(t)
			r := startStallFluentBit(t, workers, fs, arrivals.addr)

			const mails, every = 400, 100 * time.Millisecond
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			sent := 0
			go func() { // the other pipeline: one record every 100 ms, stamped when sent
				defer wg.Done()
				tick := time.NewTicker(every)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					stamp := strconv.FormatInt(time.Now().UnixNano(), 10)
					if r.trySend("other.tick", stampedRecord(stamp)) {
						sent++
					}
				}
			}()
			time.Sleep(time.Second)
			began := time.Now()
			r.send("mail.stall", numbered(0, mails))
			storedAtLeast(fs, mails)
			smtpTook := time.Since(began)
			time.Sleep(time.Second)
			close(stop)
			wg.Wait()
			arrivals.waitFor(t, sent)
			lat := arrivals.latencies()
			slices.Sort(lat)
			p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))].Round(time.Millisecond) }
			t.Logf("%s, Workers %d: smtp delivered %d emails in %v; the http output's %d records arrived %v (median), %v (90th percentile), %v (worst) after they were sent",
				filepath.Base(filepath.Dir(fluentBit(t))), workers, mails, smtpTook.Round(time.Millisecond), len(lat), p(0.5), p(0.9), p(1))
		})
	}
}

// stampedRecord is a chunk of one record carrying its send time.
func stampedRecord(stamp string) []byte {
	var e chunk.Encoder
	e.AppendV2(time.Now(), nil, map[string]any{"sent": stamp})
	return e.Bytes()
}

// startStallFluentBit runs fluent-bit with a forward input, the smtp output (mail.*) with the
// given Workers, and the http output (other.*) to httpAddr.
func startStallFluentBit(t *testing.T, workers int, fs *faultServer, httpAddr string) *fluentBitRun {
	t.Helper()
	bin := fluentBit(t)
	so, _ := artifacts(t)
	dir := t.TempDir()
	r := &fluentBitRun{t: t, sock: filepath.Join(dir, "forward.sock"), logPath: filepath.Join(dir, "fluent-bit.log"), waited: make(chan error, 1)}
	host, port, _ := net.SplitHostPort(httpAddr)
	conf := fmt.Sprintf(`[SERVICE]
    Flush 0.2
    Grace 5
    Log_Level info

[INPUT]
    Name forward
    Unix_Path %s
    Unix_Perm 0600

[OUTPUT]
    Name smtp
    Match mail.*
    Workers %d
    Retry_Limit no_limits
`, r.sock, workers)
	var keys []byte
	for k, v := range faultKeys(fs, "soc@example.com") {
		keys = fmt.Appendf(keys, "    %s %s\n", k, v)
	}
	conf += string(keys) + fmt.Sprintf(`
[OUTPUT]
    Name http
    Match other.*
    Host %s
    Port %s
    URI /in
    Format json
`, host, port)
	path := filepath.Join(dir, "fluent-bit.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	lf, err := os.Create(r.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	r.cmd = exec.Command(bin, "-e", so, "-c", path)
	r.cmd.Stdout, r.cmd.Stderr = lf, lf
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.waited <- r.cmd.Wait() }()
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("fluent-bit log:\n%s", r.log())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !r.accepting() {
		if time.Now().After(deadline) {
			t.Fatalf("fluent-bit's forward socket did not appear within 30s\n%s", r.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

// arrivalServer takes Fluent Bit's http output (format json) and notes, for each record, how
// long after its "sent" stamp it arrived.
type arrivalServer struct {
	addr string
	mu   sync.Mutex
	lat  []time.Duration
}

func startArrivalServer(t *testing.T) *arrivalServer {
	t.Helper()
	a := &arrivalServer{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.addr = l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		now := time.Now()
		body, _ := io.ReadAll(req.Body)
		var recs []map[string]any
		if err := json.Unmarshal(body, &recs); err == nil {
			a.mu.Lock()
			for _, rec := range recs {
				if s, ok := rec["sent"].(string); ok {
					if ns, err := strconv.ParseInt(s, 10, 64); err == nil {
						a.lat = append(a.lat, now.Sub(time.Unix(0, ns)))
					}
				}
			}
			a.mu.Unlock()
		}
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return a
}

func (a *arrivalServer) latencies() []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.lat)
}

// waitFor waits (bounded) until n records arrived.
func (a *arrivalServer) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for len(a.latencies()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the http output delivered %d of %d records within a minute", len(a.latencies()), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
