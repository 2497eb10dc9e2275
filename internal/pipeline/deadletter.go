package pipeline

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/internal/deadletter"
	"github.com/smtpout/smtpout/mailer"
	"github.com/smtpout/smtpout/output"
)

// openDeadLetters opens the dead letter directory of cfg (nil when dead_letter_dir is unset)
// and logs its state. ok is false when the directory cannot be used: the instance must not
// start.
func openDeadLetters(cfg config.Config, log Logger) (w *deadletter.Writer, ok bool) {
	if cfg.DeadLetterDir == "" {
		return nil, true
	}
	limit := cfg.DeadLetterMaxSize
	if limit <= 0 {
		limit = config.DefaultDeadLetterMaxSize
	}
	w, err := deadletter.Open(cfg.DeadLetterDir, limit)
	if err != nil {
		log.Log(LevelError, fmt.Sprintf("not started: dead_letter_dir %q cannot be used: %v", cfg.DeadLetterDir, err))
		return nil, false
	}
	log.Log(LevelInfo, fmt.Sprintf("dead letters: dead_letter_dir=%q dead_letter_max_size=%d used=%d",
		w.Dir(), w.Max(), w.Used()))
	if w.Used() >= w.Max() {
		log.Log(LevelWarn, fmt.Sprintf("dead_letter_dir %q is already full (%d of %d bytes): rejected records will only be logged",
			w.Dir(), w.Used(), w.Max()))
	}
	return w, true
}

// deadLetterRejected keeps a permanently rejected email in the dead letter directory, when
// there is one: the exact signed message and the reason.
func (in *Instance) deadLetterRejected(tag string, p pending, res mailer.Result) {
	if in.dead == nil {
		return
	}
	l := deadletter.Letter{
		MessageID: p.email.MessageID,
		Tag:       tag,
		Time:      p.at,
		Kind:      deadletter.Message,
		Body:      p.email.Data,
		Reason:    "rejected",
	}
	if res.Err != nil {
		l.Reason = res.Err.Error()
	}
	if c, e, ok := replyCode(res.Err); ok {
		l.Code, l.EnhancedCode = c, e
	} else if len(res.Rejected) > 0 {
		l.Code, l.EnhancedCode = res.Rejected[0].Code, res.Rejected[0].EnhancedCode
	}
	for _, r := range res.Rejected {
		l.Rejected = append(l.Rejected, deadletter.Recipient{
			Address: r.Address, Code: r.Code, EnhancedCode: r.EnhancedCode, Message: r.Message})
	}
	in.writeDeadLetter(l, fmt.Sprintf("message_id=<%s>", p.email.MessageID))
}

// maxDescribedFields bounds the field names a description of an unrenderable record lists.
const maxDescribedFields = 100

// deadLetterRecord keeps a record that could not be rendered: its JSON when that can be
// built, else a description (tag, time, field names, the error).
func (in *Instance) deadLetterRecord(tag string, idx int, at time.Time, fields map[string]any, rerr error) {
	if in.dead == nil {
		return
	}
	l := deadletter.Letter{Tag: tag, Time: at, Reason: rerr.Error()}
	if js, ok := recordJSON(output.Record{Tag: tag, Time: at, Fields: fields}); ok {
		l.Kind, l.Body = deadletter.Record, js
	} else {
		l.Kind, l.Body = deadletter.Description, describe(tag, at, fields, rerr)
	}
	in.writeDeadLetter(l, fmt.Sprintf("record %d of tag %q", idx, tag))
}

// recordJSON returns the record's JSON payload (without an added date key), or false when it
// cannot be built.
func recordJSON(rec output.Record) (js []byte, ok bool) {
	defer func() {
		if recover() != nil {
			js, ok = nil, false
		}
	}()
	js, err := output.Payload(rec, "")
	return js, err == nil
}

// describe writes what is known of a record that has no JSON form.
func describe(tag string, at time.Time, fields map[string]any, rerr error) []byte {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "This record could not be rendered as an email.\ntag: %q\ntime: %s\nerror: %v\nfields: %d\n",
		tag, at.UTC().Format(time.RFC3339Nano), rerr, len(keys))
	for i, k := range keys {
		if i == maxDescribedFields {
			fmt.Fprintf(&b, "  ... and %d more\n", len(keys)-i)
			break
		}
		if len(k) > 200 {
			k = k[:200] + "..."
		}
		fmt.Fprintf(&b, "  %q\n", k)
	}
	return []byte(b.String())
}

// writeDeadLetter writes l and logs what became of it; what names the record in the log.
// A failure is logged and never stops the flush: the [error] line of the rejection itself has
// already been written.
func (in *Instance) writeDeadLetter(l deadletter.Letter, what string) {
	w, err := in.dead.Write(l)
	switch {
	case err == nil:
		in.log.Log(LevelInfo, fmt.Sprintf("dead letter written: %s %s (%d bytes)", what, w.Path, w.Bytes))
	case errors.Is(err, deadletter.ErrExists):
		if in.log.Enabled(LevelDebug) {
			in.log.Log(LevelDebug, fmt.Sprintf("dead letter for %s is already in %s", what, w.Path))
		}
	case errors.Is(err, deadletter.ErrFull):
		in.logQuiet(LevelError, fmt.Sprintf(
			"dead letters are full: dead_letter_dir %q holds %d of %d bytes (dead_letter_max_size); rejected records are only logged until letters are moved away",
			in.dead.Dir(), in.dead.Used(), in.dead.Max()))
	default:
		in.log.Log(LevelError, fmt.Sprintf("dead letter for %s not written: %v", what, err))
	}
}
