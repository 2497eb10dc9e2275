package pipeline

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Level is a Fluent Bit log level (include/fluent-bit/flb_log.h).
type Level int

// The Fluent Bit log levels, with Fluent Bit's numbers.
const (
	LevelError Level = 1
	LevelWarn  Level = 2
	LevelInfo  Level = 3
	LevelDebug Level = 4
	LevelTrace Level = 5
)

// String returns the level as Fluent Bit prints it between brackets: "error", " warn",
// " info", "debug", "trace".
func (l Level) String() string {
	switch l {
	case LevelError:
		return "error"
	case LevelWarn:
		return " warn"
	case LevelInfo:
		return " info"
	case LevelDebug:
		return "debug"
	case LevelTrace:
		return "trace"
	}
	return fmt.Sprintf("lvl%d", int(l))
}

// Logger writes the log lines of one output instance. Messages carry no instance prefix:
// the Logger adds "[output:smtp:smtp.N] " itself.
type Logger interface {
	// Enabled reports whether a message at level would be written, so callers can skip
	// building debug and trace messages.
	Enabled(level Level) bool
	// Log writes msg at level (when enabled).
	Log(level Level, msg string)
}

// Prefix returns the prefix of an instance's log lines, "[output:smtp:NAME] ".
func Prefix(name string) string { return "[output:smtp:" + name + "] " }

// FormatLine formats a line as Fluent Bit's logger does:
// "[2026/11/27 10:00:00.123456789] [ info] msg". The time is local, as in Fluent Bit.
func FormatLine(t time.Time, level Level, msg string) string {
	return "[" + t.Format("2006/01/02 15:04:05.000000000") + "] [" + level.String() + "] " + msg + "\n"
}

// StderrLogger writes Fluent Bit-styled lines to W, for hosts that offer no logger. It is
// safe for concurrent use.
type StderrLogger struct {
	// W receives whole lines (os.Stderr in the plugin).
	W io.Writer
	// Name is the instance name ("smtp.0"); Max the most verbose level written.
	Name string
	Max  Level
	// Now returns the time stamped on each line (time.Now when nil).
	Now func() time.Time

	mu sync.Mutex
}

// Enabled implements Logger.
func (s *StderrLogger) Enabled(level Level) bool { return level <= s.Max }

// Log implements Logger.
func (s *StderrLogger) Log(level Level, msg string) {
	if !s.Enabled(level) {
		return
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	line := FormatLine(now(), level, Prefix(s.Name)+OneLine(msg))
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _ = io.WriteString(s.W, line)
}

// OneLine keeps a message on one log line: CR and LF (e.g. from a multi-line SMTP reply)
// become spaces.
func OneLine(msg string) string {
	if !strings.ContainsAny(msg, "\r\n") {
		return msg
	}
	return strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(msg)
}

// repeats suppresses identical log lines written again within a window, so a problem that
// needs an operator (AUTH refused, an untrusted certificate) is logged while it persists but
// not once per record or per chunk. Safe for concurrent use.
type repeats struct {
	window time.Duration
	now    func() time.Time

	mu   sync.Mutex
	seen map[string]*repeat
}

type repeat struct {
	at         time.Time // when the line was last written
	suppressed int       // how many times it was suppressed since
}

// maxRepeatKeys bounds the memory of repeats: past it, old entries are forgotten.
const maxRepeatKeys = 1024

func newRepeats(window time.Duration, now func() time.Time) *repeats {
	if now == nil {
		now = time.Now
	}
	return &repeats{window: window, now: now, seen: make(map[string]*repeat)}
}

// admit reports whether line should be written now, and how many identical lines were
// suppressed since it was last written.
func (r *repeats) admit(line string) (ok bool, suppressed int) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, found := r.seen[line]; found {
		if now.Sub(e.at) < r.window {
			e.suppressed++
			return false, 0
		}
		n := e.suppressed
		e.at, e.suppressed = now, 0
		return true, n
	}
	if len(r.seen) >= maxRepeatKeys {
		for k, e := range r.seen {
			if now.Sub(e.at) >= r.window {
				delete(r.seen, k)
			}
		}
		if len(r.seen) >= maxRepeatKeys {
			clear(r.seen)
		}
	}
	r.seen[line] = &repeat{at: now}
	return true, 0
}
