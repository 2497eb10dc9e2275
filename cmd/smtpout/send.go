package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/smtpout/smtpout/mailer"
	"github.com/smtpout/smtpout/output"
)

const sendDescription = `
Sends records as real emails through the plugin's exact path: each record is rendered and
signed by the output package and delivered by the mailer package with the output's settings
(one connection, TLS, AUTH). Records come from --record (one JSON object), --file (one JSON
object per line; "-" reads standard input), or, with neither, one test record. Each record
gets the time --time (default now) and the tag --tag.

For each record it prints the Message-ID and the outcome: delivered (with every recipient,
accepted or rejected with its SMTP code), rejected (a permanent 5xx: Fluent Bit would not
retry it) or retry (a temporary failure: Fluent Bit would try again). --dry-run renders
without connecting and writes the messages to standard output (feed one to "smtpout verify").

Exit status: 0 when every record was delivered to every recipient, 1 otherwise (including a
record that cannot be rendered and an invalid configuration), 2 on a bad command line.`

func runSend(e *env, args []string) int {
	fs := newFlagSet(e, "send", "-c FILE [--output NAME|INDEX] [--record JSON | --file NDJSON] [--tag TAG] [--time T] [--dry-run]", sendDescription)
	file := fs.String("c", "", "Fluent Bit configuration `file`")
	fs.StringVar(file, "config", "", "same as -c")
	sel := fs.String("output", "", "the smtp output: alias, instance name (smtp.N) or `index` among smtp outputs (needed when there are several)")
	record := fs.String("record", "", "one record as a JSON `object`")
	ndjson := fs.String("file", "", "records, one JSON object per line (`path`, or - for standard input)")
	tag := fs.String("tag", "smtpout.send", "the Fluent Bit `tag` of the records")
	at := fs.String("time", "", "the records' `time`, RFC 3339 (default now)")
	dry := fs.Bool("dry-run", false, "render and print the messages; do not connect")
	timeout := fs.Duration("timeout", 0, "overall time limit for the delivery (default none beyond the output's per-step timeout)")
	if code, done := parseFlags(e, fs, args); done {
		return code
	}
	switch {
	case *file == "":
		return usageError(e, "send", "-c FILE is required")
	case *record != "" && *ndjson != "":
		return usageError(e, "send", "give --record or --file, not both")
	case fs.NArg() > 0:
		return usageError(e, "send", "unexpected argument %q", fs.Arg(0))
	}
	when := time.Now()
	if *at != "" {
		t, err := time.Parse(time.RFC3339Nano, *at)
		if err != nil {
			return usageError(e, "send", "--time %q: want RFC 3339, such as 2026-11-27T10:00:00Z", *at)
		}
		when = t
	}

	var fields []map[string]any
	var err error
	switch {
	case *record != "":
		var f map[string]any
		f, err = decodeRecord([]byte(*record))
		if err != nil {
			return usageError(e, "send", "--record: %v", err)
		}
		fields = append(fields, f)
	case *ndjson != "":
		fields, err = readNDJSON(e, *ndjson)
		if err != nil {
			fmt.Fprintf(e.stderr, "smtpout send: --file: %v\n", err)
			return exitFail
		}
	default:
		fields = append(fields, map[string]any{
			"message": "smtpout test email: if you can read this, the smtp output can deliver",
			"source":  "smtpout send",
		})
	}

	o, cfg, ok := outputConfig(e, *file, *sel)
	if !ok {
		return exitFail
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(e.stdout, "warning: %s\n", w)
	}
	r, err := output.New(cfg)
	if err != nil {
		fmt.Fprintf(e.stdout, "FAILED %s: %v\n", o.Label(), err)
		return exitFail
	}

	failed := 0
	type item struct {
		n     int
		email *output.Email
	}
	var items []item
	for i, f := range fields {
		email, err := r.Render(output.Record{Tag: *tag, Time: when, Fields: f})
		if err != nil {
			fmt.Fprintf(e.stdout, "record %d: FAILED: cannot be rendered (the plugin would drop it): %v\n", i+1, err)
			failed++
			continue
		}
		items = append(items, item{n: i + 1, email: email})
	}
	if *dry {
		for _, it := range items {
			fmt.Fprintf(e.stderr, "record %d <%s>: rendered, %d bytes, not sent (--dry-run)\n", it.n, it.email.MessageID, len(it.email.Data))
			e.stdout.Write(it.email.Data)
		}
		if failed > 0 {
			return exitFail
		}
		return exitOK
	}
	if len(items) == 0 {
		return exitFail
	}

	m, err := mailer.New(cfg)
	if err != nil {
		fmt.Fprintf(e.stdout, "FAILED %s: %v\n", o.Label(), err)
		return exitFail
	}
	defer m.Close()
	ctx := context.Background()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	msgs := make([]mailer.Message, len(items))
	for i, it := range items {
		msgs[i] = mailer.Message{ID: it.email.MessageID, From: it.email.From, To: it.email.Recipients, Data: it.email.Data}
	}
	fmt.Fprintf(e.stdout, "sending %d email(s) through %s (%s) to %s\n", len(msgs), o.Label(), cfg.Address(), strings.Join(cfg.Recipients(), ", "))
	results := m.Send(ctx, msgs)
	for i, it := range items {
		var res mailer.Result
		if i < len(results) {
			res = results[i]
		} else {
			res = mailer.Result{Outcome: mailer.Retry, Err: errors.New("no result from the mailer")}
		}
		if !printResult(e.stdout, it.n, it.email, res) {
			failed++
		}
	}
	if err := m.Close(); err != nil {
		fmt.Fprintf(e.stdout, "warning: closing the connection: %v\n", err)
	}
	if failed > 0 {
		fmt.Fprintf(e.stdout, "%d of %d record(s) not delivered to every recipient\n", failed, len(fields))
		return exitFail
	}
	return exitOK
}

// printResult prints one record's outcome and reports whether every recipient got it.
func printResult(w io.Writer, n int, email *output.Email, res mailer.Result) bool {
	switch res.Outcome {
	case mailer.Delivered:
		fmt.Fprintf(w, "record %d <%s>: delivered\n", n, email.MessageID)
		rejected := map[string]mailer.RecipientError{}
		for _, r := range res.Rejected {
			rejected[strings.ToLower(r.Address)] = r
		}
		for _, rcpt := range email.Recipients {
			if r, bad := rejected[strings.ToLower(rcpt)]; bad {
				fmt.Fprintf(w, "  %s: rejected %s\n", rcpt, rejectionText(r))
			} else {
				fmt.Fprintf(w, "  %s: accepted\n", rcpt)
			}
		}
		return len(res.Rejected) == 0
	case mailer.Rejected:
		fmt.Fprintf(w, "record %d <%s>: rejected (permanent; Fluent Bit would not retry)", n, email.MessageID)
		if res.Err != nil {
			fmt.Fprintf(w, ": %v", res.Err)
		}
		fmt.Fprintln(w)
		for _, r := range res.Rejected {
			fmt.Fprintf(w, "  %s: rejected %s\n", r.Address, rejectionText(r))
		}
	default:
		fmt.Fprintf(w, "record %d <%s>: retry (temporary; Fluent Bit would try again)", n, email.MessageID)
		if res.Err != nil {
			fmt.Fprintf(w, ": %v", res.Err)
		}
		fmt.Fprintln(w)
		if res.Ambiguous {
			fmt.Fprintln(w, "  the connection was lost after the message was sent: it may have been delivered")
		}
	}
	return false
}

func rejectionText(r mailer.RecipientError) string {
	s := fmt.Sprint(r.Code)
	if r.EnhancedCode != "" {
		s += " " + r.EnhancedCode
	}
	if r.Message != "" {
		s += " " + r.Message
	}
	return s
}

// decodeRecord parses one JSON object into record fields: whole numbers become int64 (or
// uint64), others float64, as they would arrive from Fluent Bit's msgpack.
func decodeRecord(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not JSON: %v", err)
	}
	if dec.More() {
		return nil, errors.New("more than one JSON value")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("a record must be a JSON object {...}")
	}
	return numbers(m).(map[string]any), nil
}

func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		var u uint64
		if _, err := fmt.Sscan(x.String(), &u); err == nil && !strings.ContainsAny(x.String(), ".eE-") {
			return u
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	}
	return v
}

// maxLine bounds one NDJSON line, as output.MaxPayloadSize bounds a payload.
const maxLine = output.MaxPayloadSize + 1<<10

// readNDJSON reads one JSON object per line; blank lines are skipped.
func readNDJSON(e *env, path string) ([]map[string]any, error) {
	var r io.Reader = e.stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var out []map[string]any
	line := 0
	for sc.Scan() {
		line++
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		m, err := decodeRecord(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %v", line+1, err)
	}
	if len(out) == 0 {
		return nil, errors.New("no records")
	}
	return out, nil
}
