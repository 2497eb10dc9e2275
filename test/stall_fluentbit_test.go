package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
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
			host, port, _ := net.SplitHostPort(arrivals.addr)
			r := startFluentBit(t, []outputSection{
				{match: "mail.*", workers: strconv.Itoa(workers), retryLimit: "no_limits", keys: faultKeys(fs, "soc@example.com")},
				{plugin: "http", match: "other.*", keys: map[string]string{"host": host, "port": port, "uri": "/in", "format": "json"}},
			}, true)

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
