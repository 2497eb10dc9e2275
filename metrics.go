package main

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include "flbapi.h"

// The cmetrics functions the plugin uses, as declared in Fluent Bit's lib/cmetrics
// (include/cmetrics/cmt_counter.h, cmt_histogram.h). Fluent Bit exports them from its binary;
// they are found at run time with dlsym, so a host without them (a test host) leaves metrics
// off instead of failing to load the plugin.
typedef void *(*smtpout_counter_create_fn)(void *cmt, char *ns, char *subsystem, char *name,
                                           char *help, int label_count, char **label_keys);
typedef int (*smtpout_counter_add_fn)(void *counter, uint64_t ts, double val,
                                      int labels_count, char **label_vals);
typedef void *(*smtpout_buckets_create_size_fn)(double *bounds, size_t count);
typedef void *(*smtpout_histogram_create_fn)(void *cmt, char *ns, char *subsystem, char *name,
                                             char *help, void *buckets, int label_count,
                                             char **label_keys);
typedef int (*smtpout_histogram_observe_fn)(void *histogram, uint64_t ts, double val,
                                            int labels_count, char **label_vals);
typedef int (*smtpout_histogram_set_default_fn)(void *histogram, uint64_t ts,
                                                uint64_t *bucket_defaults, double sum,
                                                uint64_t count, int labels_count,
                                                char **label_vals);

struct smtpout_cmt_api {
    smtpout_counter_create_fn counter_create;
    smtpout_counter_add_fn counter_add;
    smtpout_buckets_create_size_fn buckets_create_size;
    smtpout_histogram_create_fn histogram_create;
    smtpout_histogram_observe_fn histogram_observe;
    smtpout_histogram_set_default_fn histogram_set_default;
};

// smtpout_cmt_resolve fills a with what the process exports; it returns 1 when counters are
// available (the histogram functions may still be missing).
static int smtpout_cmt_resolve(struct smtpout_cmt_api *a)
{
    a->counter_create = (smtpout_counter_create_fn) dlsym(RTLD_DEFAULT, "cmt_counter_create");
    a->counter_add = (smtpout_counter_add_fn) dlsym(RTLD_DEFAULT, "cmt_counter_add");
    a->buckets_create_size = (smtpout_buckets_create_size_fn) dlsym(RTLD_DEFAULT, "cmt_histogram_buckets_create_size");
    a->histogram_create = (smtpout_histogram_create_fn) dlsym(RTLD_DEFAULT, "cmt_histogram_create");
    a->histogram_observe = (smtpout_histogram_observe_fn) dlsym(RTLD_DEFAULT, "cmt_histogram_observe");
    a->histogram_set_default = (smtpout_histogram_set_default_fn) dlsym(RTLD_DEFAULT, "cmt_histogram_set_default");
    return a->counter_create != NULL && a->counter_add != NULL;
}

// smtpout_cmt_instance returns the instance's struct cmt *, or NULL when the host has none.
static void *smtpout_cmt_instance(struct smtpout_flb_api *api, void *o_ins)
{
    if (api == NULL || api->output_get_cmt_instance == NULL || o_ins == NULL) {
        return NULL;
    }
    return api->output_get_cmt_instance(o_ins);
}

static void *smtpout_counter_create(struct smtpout_cmt_api *a, void *cmt, char *ns, char *sub,
                                    char *name, char *help, char **label_keys)
{
    return a->counter_create(cmt, ns, sub, name, help, 1, label_keys);
}

static int smtpout_counter_add(struct smtpout_cmt_api *a, void *counter, uint64_t ts, double val,
                               char **label_vals)
{
    return a->counter_add(counter, ts, val, 1, label_vals);
}

// smtpout_histogram_create creates the histogram and its one series, at zero, now: cmetrics
// does not lock, so a series must not first appear from a flush thread while Fluent Bit's
// metrics endpoint reads the list. Without cmt_histogram_set_default there is no histogram.
static void *smtpout_histogram_create(struct smtpout_cmt_api *a, void *cmt, char *ns, char *sub,
                                      char *name, char *help, double *bounds, size_t n,
                                      char **label_keys, uint64_t ts, char **label_vals)
{
    void *buckets;
    void *h;
    uint64_t *zeros;
    int rc;

    if (a->buckets_create_size == NULL || a->histogram_create == NULL ||
        a->histogram_observe == NULL || a->histogram_set_default == NULL) {
        return NULL;
    }
    buckets = a->buckets_create_size(bounds, n);
    if (buckets == NULL) {
        return NULL;
    }
    // The histogram owns the buckets from here (cmt_histogram_destroy frees them).
    h = a->histogram_create(cmt, ns, sub, name, help, buckets, 1, label_keys);
    if (h == NULL) {
        return NULL;
    }
    zeros = calloc(n + 1, sizeof(uint64_t)); // one per bound, plus +Inf
    if (zeros == NULL) {
        return NULL;
    }
    rc = a->histogram_set_default(h, ts, zeros, 0, 0, 1, label_vals);
    free(zeros);
    return rc == 0 ? h : NULL;
}

static int smtpout_histogram_observe(struct smtpout_cmt_api *a, void *h, uint64_t ts, double val,
                                     char **label_vals)
{
    return a->histogram_observe(h, ts, val, 1, label_vals);
}
*/
import "C"

import (
	"fmt"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/smtpout/smtpout/internal/pipeline"
)

// Metric namespace and subsystem: every metric is fluentbit_smtp_<name>, with the label
// name=<instance name>, next to Fluent Bit's own fluentbit_output_* metrics.
const (
	metricNamespace = "fluentbit"
	metricSubsystem = "smtp"
	metricLabel     = "name"
)

// cmtCounter is one of the plugin's counters: its name (after fluentbit_smtp_), help text and
// what it counts in a flush's Stats.
type cmtCounter struct {
	name, help string
	value      func(st pipeline.Stats) int
}

// cmtCounterDefs are the plugin's counters, in creation order. connections_opened_total
// is not here: it comes from the mailer (Instance.Dials), not from a flush's Stats.
var cmtCounterDefs = []cmtCounter{
	{"emails_delivered_total", "Emails the SMTP server accepted for at least one recipient.",
		func(st pipeline.Stats) int { return st.Delivered }},
	{"emails_rejected_total", "Emails permanently rejected (5xx for the message or every recipient); not retried.",
		func(st pipeline.Stats) int { return st.Rejected }},
	{"emails_retried_total", "Emails that failed for now (4xx, network, TLS, AUTH) and are left to Fluent Bit's retry.",
		func(st pipeline.Stats) int { return st.Retried }},
	{"recipients_rejected_total", "Single recipients refused with 5xx on emails delivered to others.",
		func(st pipeline.Stats) int { return st.RecipientsRejected }},
	{"bytes_sent_total", "Bytes of the emails the SMTP server accepted.",
		func(st pipeline.Stats) int { return st.Bytes }},
	{"emails_held_total", "Records the storm guard (max_emails_per_minute) or a pause after a quota reply held back for a later retry.",
		func(st pipeline.Stats) int { return st.Held }},
	{"quota_replies_total", "Emails that got a mail provider's quota or throttling reply (Exchange Online 554 5.2.0, 432 4.3.2; Gmail 550 5.4.5 ...): kept for a retry, never rejected.",
		func(st pipeline.Stats) int { return st.QuotaReplies }},
	{"records_dropped_total", "Records that could not be rendered, and chunk entries that could not be decoded.",
		func(st pipeline.Stats) int { return st.Dropped + st.Malformed }},
}

// runningTotals are counts the instance keeps itself (the mailer's dials and AUTH results, the
// ledger's failed writes, the digests sent between flushes), in the order of cmtTotalDefs;
// record adds what grew since the last flush.
type runningTotals [7]int64

// cmtTotalDefs name the counters fed from runningTotals.
var cmtTotalDefs = [len(runningTotals{})]struct{ name, help string }{
	{"connections_opened_total", "SMTP connections opened (dials, successful or not)."},
	{"token_requests_ok_total", "OAuth 2.0 token requests that obtained a token (auth_mechanism xoauth2/oauthbearer)."},
	{"token_requests_failed_total", "OAuth 2.0 token requests that failed (endpoint unreachable, or an OAuth error such as invalid_client)."},
	{"auth_failures_total", "SMTP AUTH attempts the server refused (5xx, or a refused token)."},
	{"ledger_write_errors_total", "Failed writes and syncs of the ledger file in ledger_dir (a full disk): emails settled then may be sent again after a restart."},
	{"digests_sent_total", "Digest emails (digest_window) the SMTP server accepted."},
	{"digest_records_total", "Records delivered inside digest emails: each counts as delivered when its digest is."},
}

// totalsOf reads an instance's running totals.
func totalsOf(run *pipeline.Instance) runningTotals {
	a := run.AuthStats()
	digests, records := run.DigestStats()
	return runningTotals{run.Dials(), a.TokenOK, a.TokenFailed, a.AuthFailures, run.LedgerErrors(), digests, records}
}

const (
	latencyName = "delivery_seconds"
	latencyHelp = "Time to deliver one email: from taking a connection (dialling when needed) to the server's final reply."
)

// latencyBuckets are the upper bounds of the delivery_seconds histogram.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// cmtAPI is resolved once per process: the functions do not change.
var (
	cmtOnce     sync.Once
	cmtAPI      C.struct_smtpout_cmt_api
	cmtCounters bool
)

// cmtMetrics are one instance's counters in Fluent Bit's cmetrics context; nil when the host
// offers none. Safe for concurrent use (flushes of several workers).
type cmtMetrics struct {
	mu         sync.Mutex
	labels     **C.char // one C string, the instance name (C memory, kept for the process)
	counters   []unsafe.Pointer
	totals     [len(runningTotals{})]unsafe.Pointer // the counters of cmtTotalDefs
	latency    unsafe.Pointer                       // nil when the host lacks histograms
	totalsSeen runningTotals                        // running totals already counted
	closed     bool
}

// openMetrics creates the instance's metrics in the cmetrics context Fluent Bit keeps for
// the output instance o_ins, or returns nil (metrics off, said in one debug line) when the host
// offers no cmetrics. Call it from FLBPluginInit, where o_ins is this instance's.
func openMetrics(api *C.struct_smtpout_flb_api, ins unsafe.Pointer, name string, log pipeline.Logger) *cmtMetrics {
	cmt := C.smtpout_cmt_instance(api, ins)
	if cmt == nil {
		log.Log(pipeline.LevelDebug, "metrics off: the host offers no cmetrics context (output_get_cmt_instance)")
		return nil
	}
	cmtOnce.Do(func() { cmtCounters = C.smtpout_cmt_resolve(&cmtAPI) == 1 })
	if !cmtCounters {
		log.Log(pipeline.LevelDebug, "metrics off: the host does not export cmt_counter_create and cmt_counter_add")
		return nil
	}
	// cmetrics copies names, help texts, label keys and values: only the label value array,
	// passed on every update, lives as long as the instance.
	cstr := func(s string) *C.char { return C.CString(s) }
	ns, sub := cstr(metricNamespace), cstr(metricSubsystem)
	keys := cstringArray(metricLabel)
	defer func() {
		C.free(unsafe.Pointer(ns))
		C.free(unsafe.Pointer(sub))
		freeCStringArray(keys)
	}()
	m := &cmtMetrics{labels: cstringArray(name)}

	create := func(name, help string) unsafe.Pointer {
		cn, ch := cstr(name), cstr(help)
		defer C.free(unsafe.Pointer(cn))
		defer C.free(unsafe.Pointer(ch))
		return C.smtpout_counter_create(&cmtAPI, cmt, ns, sub, cn, ch, keys)
	}
	var failed []string
	for _, c := range cmtCounterDefs {
		p := create(c.name, c.help)
		if p == nil {
			failed = append(failed, c.name)
		}
		m.counters = append(m.counters, p)
	}
	for i, c := range cmtTotalDefs {
		if m.totals[i] = create(c.name, c.help); m.totals[i] == nil {
			failed = append(failed, c.name)
		}
	}
	if len(failed) > 0 {
		// cmetrics refuses a name already registered in this context: nothing is counted
		// rather than half.
		log.Log(pipeline.LevelWarn, "metrics off: cmetrics did not create "+strings.Join(failed, ", "))
		freeCStringArray(m.labels)
		return nil
	}
	bounds := (*C.double)(C.malloc(C.size_t(len(latencyBuckets)) * C.size_t(unsafe.Sizeof(C.double(0)))))
	for i, b := range latencyBuckets {
		unsafe.Slice(bounds, len(latencyBuckets))[i] = C.double(b)
	}
	ln, lh := cstr(latencyName), cstr(latencyHelp)
	m.latency = C.smtpout_histogram_create(&cmtAPI, cmt, ns, sub, ln, lh, bounds, C.size_t(len(latencyBuckets)), keys,
		cmtTimestamp(), m.labels)
	C.free(unsafe.Pointer(bounds)) // cmetrics copies the bounds
	C.free(unsafe.Pointer(ln))
	C.free(unsafe.Pointer(lh))

	// Every series exists from the start, at 0, so increase() and rate() see the first events.
	now := cmtTimestamp()
	for _, p := range append(append([]unsafe.Pointer{}, m.counters...), m.totals[:]...) {
		C.smtpout_counter_add(&cmtAPI, p, now, 0, m.labels)
	}
	what := fmt.Sprintf("%d counters", len(m.counters)+len(m.totals))
	if m.latency != nil {
		what += " and the " + metricNamespace + "_" + metricSubsystem + "_" + latencyName + " histogram"
	}
	log.Log(pipeline.LevelDebug, fmt.Sprintf("metrics on: %s in Fluent Bit's cmetrics, label %s=%q", what, metricLabel, name))
	return m
}

// cmtTimestamp is the cmetrics timestamp: nanoseconds since the epoch.
func cmtTimestamp() C.uint64_t { return C.uint64_t(time.Now().UnixNano()) }

// record adds what one flush did, and what the running totals grew by since the last call. A
// nil m does nothing.
func (m *cmtMetrics) record(st pipeline.Stats, totals runningTotals) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	now := cmtTimestamp()
	for i, c := range cmtCounterDefs {
		if v := c.value(st); v > 0 {
			C.smtpout_counter_add(&cmtAPI, m.counters[i], now, C.double(v), m.labels)
		}
	}
	for i, v := range totals {
		if d := v - m.totalsSeen[i]; d > 0 {
			m.totalsSeen[i] = v
			C.smtpout_counter_add(&cmtAPI, m.totals[i], now, C.double(d), m.labels)
		}
	}
	if m.latency != nil {
		for _, l := range st.Latencies {
			C.smtpout_histogram_observe(&cmtAPI, m.latency, now, C.double(l.Seconds()), m.labels)
		}
	}
}

// close stops updates: Fluent Bit destroys the instance's cmetrics context after
// FLBPluginExitCtx. A nil m does nothing.
func (m *cmtMetrics) close() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		freeCStringArray(m.labels)
		m.labels = nil
	}
}

// cstringArray returns a C array of one C string (cmetrics' label keys and values).
func cstringArray(s string) **C.char {
	a := (**C.char)(C.malloc(C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	*a = C.CString(s)
	return a
}

func freeCStringArray(a **C.char) {
	C.free(unsafe.Pointer(*a))
	C.free(unsafe.Pointer(a))
}
