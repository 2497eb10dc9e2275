package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpout/smtpout/testsupport/mailpit"
	"github.com/smtpout/smtpout/testsupport/testcert"
)

// metricNames are the counters every instance creates, without the fluentbit_smtp_ prefix.
var metricNames = []string{
	"emails_delivered_total", "emails_rejected_total", "emails_retried_total",
	"recipients_rejected_total", "bytes_sent_total", "emails_held_total", "quota_replies_total",
	"records_dropped_total", "connections_opened_total",
	"token_requests_ok_total", "token_requests_failed_total", "auth_failures_total", "ledger_write_errors_total",
}

// Metrics returns the host's cmetrics stub values, keyed `fluentbit_smtp_X{name="smtp.N"}`
// (a histogram as X_count and X_sum). It fails the test when the plugin broke the cmetrics
// calling convention.
func (h *Host) Metrics() map[string]float64 {
	h.t.Helper()
	r := h.Do("metrics")
	rest, ok := strings.CutPrefix(r, "metrics ->")
	if !ok {
		h.t.Fatalf("metrics reply %q", r)
	}
	out := make(map[string]float64)
	for _, f := range strings.Fields(rest) {
		if e, ok := strings.CutPrefix(f, "error="); ok {
			h.t.Fatalf("the plugin broke the cmetrics convention: %s", e)
		}
		k, v, ok := strings.Cut(f, "}=")
		if !ok {
			h.t.Fatalf("metrics reply %q: bad field %q", r, f)
		}
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			h.t.Fatalf("metrics reply %q: %v", r, err)
		}
		out[k+"}"] = n
	}
	return out
}

// series returns instance name's values of metricNames plus delivery_seconds_count (-1
// when absent), keyed by the short name.
func series(m map[string]float64, name string) map[string]float64 {
	out := make(map[string]float64)
	for _, n := range append(append([]string{}, metricNames...), "delivery_seconds_count", "delivery_seconds_sum") {
		v, ok := m[fmt.Sprintf(`fluentbit_smtp_%s{name="%s"}`, n, name)]
		if !ok {
			v = -1
		}
		out[n] = v
	}
	return out
}

// TestMetricsThroughCmetrics: three instances of one host with cmetrics, one delivering
// (with one recipient refused), one whose every email is rejected, one whose server is down.
// Each instance's counters say exactly that, under its own label.
func TestMetricsThroughCmetrics(t *testing.T) {
	cert := testcert.New(t)
	mp := mailpit.Start(t, mailpit.Options{TLS: mailpit.ImplicitTLS, CertFile: cert.CertFile, KeyFile: cert.KeyFile,
		AllowedRecipients: "^ok"})
	srv := &server{mp: mp, cert: cert}
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := down.Addr().String()
	down.Close()

	h := StartHost(t)
	h.Expect("cmetrics on", "ok")
	h.Configure(0, baseKeys(srv, "ok@example.com, refused@example.com"))
	h.Configure(1, baseKeys(srv, "refused@example.com"))
	keys := baseKeys(srv, "ok@example.com")
	keys["dest_host"] = downAddr
	h.Configure(2, keys)
	for i := range 3 {
		h.Expect(fmt.Sprintf("loglevel %d debug", i), "ok")
		if rc := h.Init(i); rc != flbOK {
			t.Fatalf("init %d = %d; log:\n%s", i, rc, h.Log())
		}
		if l := h.LogLines(fmt.Sprintf("[debug] [output:smtp:smtp.%d] metrics on: 15 counters and the fluentbit_smtp_delivery_seconds histogram", i)); len(l) != 1 {
			t.Errorf("instance %d: want one 'metrics on' debug line; log:\n%s", i, h.Log())
		}
	}
	// Every series exists at 0 before anything happened.
	before := h.Metrics()
	for i := range 3 {
		got := series(before, fmt.Sprintf("smtp.%d", i))
		for _, n := range metricNames {
			if got[n] != 0 {
				t.Errorf("smtp.%d %s = %v before any flush, want 0", i, n, got[n])
			}
		}
	}

	if rc := h.Flush(0, "app.ok", mixedChunk()); rc != flbOK { // 6 records and one malformed entry
		t.Errorf("flush 0 = %d, want FLB_OK", rc)
	}
	if rc := h.Flush(1, "app.refused", numbered(10, 2)); rc != flbOK {
		t.Errorf("flush 1 = %d, want FLB_OK (rejected emails are not retried)", rc)
	}
	if rc := h.Flush(2, "app.down", numbered(20, 4)); rc != flbRetry {
		t.Errorf("flush 2 = %d, want FLB_RETRY", rc)
	}
	msgs := srv.waitMessages(t, 6)
	var sent float64
	for _, m := range msgs {
		sent += float64(len(srv.raw(t, m.ID)))
	}
	// The chunk handed back after the retry: nothing new for instance 0's counters.
	if rc := h.Flush(0, "app.ok", mixedChunk()); rc != flbOK {
		t.Errorf("flush 0 again = %d, want FLB_OK", rc)
	}

	m := h.Metrics()
	got := map[string]map[string]float64{}
	for i := range 3 {
		got[fmt.Sprintf("smtp.%d", i)] = series(m, fmt.Sprintf("smtp.%d", i))
	}
	// Values that depend on timing or on the pool are checked below, then fixed for the diff.
	for name, s := range got {
		if c := s["connections_opened_total"]; c < 1 || c > 4 {
			t.Errorf("%s connections_opened_total = %v, want 1..4 (max_connections 4)", name, c)
		}
		s["connections_opened_total"] = 1
	}
	// mailpit stores what it got after a Return-Path and a Received header of its own (~180
	// bytes): the counter is a little less than the stored size, never more.
	if b := got["smtp.0"]["bytes_sent_total"]; b >= sent || b < sent-6*300 {
		t.Errorf("smtp.0 bytes_sent_total = %v, want the %v bytes mailpit stored less its own headers (at most 300 per email)", b, sent)
	}
	got["smtp.0"]["bytes_sent_total"] = 1
	if s := got["smtp.0"]["delivery_seconds_sum"]; s <= 0 || s > 60 {
		t.Errorf("smtp.0 delivery_seconds_sum = %v, want > 0", s)
	}
	got["smtp.0"]["delivery_seconds_sum"] = 1
	want := map[string]map[string]float64{
		"smtp.0": {"emails_delivered_total": 6, "emails_rejected_total": 0, "emails_retried_total": 0,
			"recipients_rejected_total": 6, "bytes_sent_total": 1, "emails_held_total": 0, "quota_replies_total": 0,
			"records_dropped_total":    2, // one malformed entry per flush of the chunk
			"connections_opened_total": 1, "token_requests_ok_total": 0, "token_requests_failed_total": 0, "auth_failures_total": 0, "ledger_write_errors_total": 0, "delivery_seconds_count": 6, "delivery_seconds_sum": 1},
		"smtp.1": {"emails_delivered_total": 0, "emails_rejected_total": 2, "emails_retried_total": 0,
			"recipients_rejected_total": 0, "bytes_sent_total": 0, "emails_held_total": 0, "quota_replies_total": 0,
			"records_dropped_total": 0, "connections_opened_total": 1, "token_requests_ok_total": 0, "token_requests_failed_total": 0, "auth_failures_total": 0, "ledger_write_errors_total": 0, "delivery_seconds_count": 0, "delivery_seconds_sum": 0}, // created at Init
		"smtp.2": {"emails_delivered_total": 0, "emails_rejected_total": 0, "emails_retried_total": 4,
			"recipients_rejected_total": 0, "bytes_sent_total": 0, "emails_held_total": 0, "quota_replies_total": 0,
			"records_dropped_total": 0, "connections_opened_total": 1, "token_requests_ok_total": 0, "token_requests_failed_total": 0, "auth_failures_total": 0, "ledger_write_errors_total": 0, "delivery_seconds_count": 0, "delivery_seconds_sum": 0}, // created at Init
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got; -1: series absent):\n%s\nhost reply: %v", diff, m)
	}

	// Exit stops the updates (Fluent Bit destroys the context after FLBPluginExitCtx).
	for i := range 3 {
		if rc := h.Exit(i); rc != flbOK {
			t.Errorf("exit %d = %d", i, rc)
		}
	}
	if diff := cmp.Diff(m, h.Metrics()); diff != "" {
		t.Errorf("metrics changed at exit (-before +after):\n%s", diff)
	}
}

// TestMetricsOffWithoutCmetrics: a host that offers no cmetrics context gets no metrics,
// one debug line, and delivery as usual.
func TestMetricsOffWithoutCmetrics(t *testing.T) {
	srv := startServer(t)
	h := StartHost(t)
	h.Configure(0, baseKeys(srv, "soc@example.com"))
	h.Expect("loglevel 0 debug", "ok")
	if rc := h.Init(0); rc != flbOK {
		t.Fatalf("init = %d; log:\n%s", rc, h.Log())
	}
	if rc := h.Flush(0, "app", numbered(0, 3)); rc != flbOK {
		t.Fatalf("flush = %d; log:\n%s", rc, h.Log())
	}
	srv.waitMessages(t, 3)
	if m := h.Metrics(); len(m) != 0 {
		t.Errorf("metrics without cmetrics: %v, want none", m)
	}
	if l := h.LogLines("[debug] [output:smtp:smtp.0] metrics off: the host offers no cmetrics context"); len(l) != 1 {
		t.Errorf("want one 'metrics off' debug line; log:\n%s", h.Log())
	}
	if l := h.LogLines("metrics on"); len(l) != 0 {
		t.Errorf("metrics reported on: %q", l)
	}
	h.Expect("exit 0", "exit 0 -> 1")
}

// TestFluentBitMetricsEndpoint runs the scenario of TestMetricsThroughCmetrics through a real
// Fluent Bit (FLUENT_BIT) and reads the counters from its Prometheus endpoint.
func TestFluentBitMetricsEndpoint(t *testing.T) {
	fluentBit(t)
	cert := testcert.New(t)
	mp := mailpit.Start(t, mailpit.Options{TLS: mailpit.ImplicitTLS, CertFile: cert.CertFile, KeyFile: cert.KeyFile,
		AllowedRecipients: "^ok"})
	srv := &server{mp: mp, cert: cert}
	port := freePort(t) // Fluent Bit needs a fixed HTTP_Port
	var outs []outputSection
	for _, o := range []struct{ match, to string }{{"ok.*", "ok@example.com, refused@example.com"}, {"refused.*", "refused@example.com"}} {
		outs = append(outs, outputSection{match: o.match, retryLimit: "no_limits", keys: baseKeys(srv, o.to)})
	}
	fb := startFluentBitWith(t, httpServer(port), outs, false)
	waitFor := func(what string, ok func(string) bool) string { return fb.waitMetrics(port, what, ok) }
	waitFor("the smtp counters and the forward socket", func(s string) bool {
		return fb.accepting() && strings.Contains(s, "fluentbit_smtp_emails_delivered_total")
	})
	fb.send("ok.app", numbered(0, 3))
	fb.send("refused.app", numbered(10, 2))
	srv.waitMessages(t, 3)
	body := waitFor("the delivered and rejected counts", func(s string) bool {
		return strings.Contains(s, `fluentbit_smtp_emails_delivered_total{name="smtp.0"} 3`) &&
			strings.Contains(s, `fluentbit_smtp_emails_rejected_total{name="smtp.1"} 2`)
	})
	for _, want := range []string{
		`fluentbit_smtp_recipients_rejected_total{name="smtp.0"} 3`,
		`fluentbit_smtp_emails_rejected_total{name="smtp.0"} 0`,
		`fluentbit_smtp_emails_delivered_total{name="smtp.1"} 0`,
		`fluentbit_smtp_delivery_seconds_count{name="smtp.0"} 3`,
		`fluentbit_smtp_connections_opened_total{name="smtp.0"}`,
		"fluentbit_output_proc_records_total", // Fluent Bit's own, on the same page
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the Prometheus endpoint lacks %q:\n%s", want, body)
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago, for a server (Fluent Bit's
// HTTP server) that cannot be given port 0.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// httpServer is the [SERVICE] section's keys for Fluent Bit's HTTP server on 127.0.0.1:port.
func httpServer(port int) map[string]string {
	return map[string]string{"HTTP_Server": "On", "HTTP_Listen": "127.0.0.1", "HTTP_Port": fmt.Sprint(port)}
}

// scrapeClient opens a connection per scrape and gives up after a few seconds: a hot reload
// restarts Fluent Bit's HTTP server, and a kept-alive connection to the old one never answers.
var scrapeClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// scrapeMetrics returns Fluent Bit's Prometheus page, or "" while it does not answer.
func scrapeMetrics(port int) string {
	resp, err := scrapeClient.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v2/metrics/prometheus", port))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// waitMetrics scrapes Fluent Bit's Prometheus page on port until ok accepts it (a minute at
// most) and returns it; it fails the test if Fluent Bit exits first.
func (r *fluentBitRun) waitMetrics(port int, what string, ok func(string) bool) string {
	r.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		body := scrapeMetrics(port)
		if ok(body) {
			return body
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: not seen within a minute; last scrape:\n%s", what, body)
		}
		select {
		case err := <-r.waited:
			r.waited <- err
			r.t.Fatalf("fluent-bit exited: %v\n%s", err, r.log())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestMetricsConnectionsWithDropsInGroups: the server drops the connection in the middle of
// pipelined groups (twice, one connection at a time), the messages behind each drop are sent
// again on a new connection, and connections_opened_total equals the connections the server
// saw: a redial inside a group counts once. Every record arrives; every copy is explained.
func TestMetricsConnectionsWithDropsInGroups(t *testing.T) {
	fs, keys := dropsInGroups(t)
	h := StartHost(t)
	h.Expect("cmetrics on", "ok")
	h.Configure(0, keys)
	if rc := h.Init(0); rc != flbOK {
		t.Fatalf("init = %d; log:\n%s", rc, h.Log())
	}
	flushUntilOK(t, h, numbered(0, 40), 5)
	c := fs.Counters()
	if c.Injected[faultDropBeforeStore] != 1 || c.Injected[faultDropAfterStore] != 1 {
		t.Fatalf("faults injected %v, want one drop of each kind: the scenario did not happen", c.Injected)
	}
	resent := h.LogLines("[ warn] [output:smtp:smtp.0] delivery of Message-ID <", "may be repeated")
	if len(resent) == 0 {
		t.Errorf("no message was sent again on a new connection: the drops were not inside groups; log:\n%s", h.Log())
	}
	got := series(h.Metrics(), "smtp.0")["connections_opened_total"]
	if got != float64(c.Opened) {
		t.Errorf("connections_opened_total = %v, the server saw %d connections", got, c.Opened)
	}
	t.Logf("%d connections, %d emails sent again after a drop", c.Opened, len(resent))
	checkDelivery(t, fs, span(0, 40))
	h.Exit(0)
}

// dropsInGroups starts the fault server of the drops-inside-groups scenarios and returns it
// with the keys of an output using one connection at a time and pipelined groups of 16.
func dropsInGroups(t *testing.T) (*faultServer, map[string]string) {
	fs := startFaultServer(t, faultOptions{plan: func(tx int) fault {
		switch tx {
		case 4: // the third message of the first group (the first message goes alone)
			return faultDropBeforeStore
		case 20: // inside the group on the connection opened after the first drop
			return faultDropAfterStore
		}
		return faultNone
	}})
	keys := faultKeys(fs, "soc@example.com")
	keys["max_connections"] = "1"
	keys["pipeline_depth"] = "16" // groups: the default (1) sends one email at a time
	return fs, keys
}

// TestFluentBitMetricsConnectionsWithDropsInGroups is TestMetricsConnectionsWithDropsInGroups
// through a real Fluent Bit, the counter read from its Prometheus endpoint.
func TestFluentBitMetricsConnectionsWithDropsInGroups(t *testing.T) {
	fluentBit(t)
	fs, keys := dropsInGroups(t)
	port := freePort(t)
	service := httpServer(port)
	service["scheduler.base"] = "1" // Fluent Bit's retry of the chunk within seconds
	service["scheduler.cap"] = "3"
	fb := startFluentBitWith(t, service, []outputSection{{match: "*", retryLimit: "no_limits", keys: keys}}, true)
	fb.send(faultTag, numbered(0, 40))
	body := fb.waitMetrics(port, "40 emails delivered", func(s string) bool {
		return strings.Contains(s, `fluentbit_smtp_emails_delivered_total{name="smtp.0"} 40`)
	})
	c := fs.Counters()
	if c.Injected[faultDropBeforeStore] != 1 || c.Injected[faultDropAfterStore] != 1 {
		t.Fatalf("faults injected %v, want one drop of each kind: the scenario did not happen", c.Injected)
	}
	got := metricValue(body, `fluentbit_smtp_connections_opened_total{name="smtp.0"}`)
	if got != float64(c.Opened) {
		t.Errorf("connections_opened_total = %v, the server saw %d connections", got, c.Opened)
	}
	fb.stop()
	resent := fb.logLines("[ warn] [output:smtp:smtp.0] delivery of Message-ID <", "may be repeated")
	if len(resent) == 0 {
		t.Errorf("no message was sent again on a new connection: the drops were not inside groups")
	}
	t.Logf("%d connections, %d emails sent again after a drop", c.Opened, len(resent))
	checkDelivery(t, fs, span(0, 40))
}
