package mailer

import (
	"bufio"
	"bytes"
	"fmt"
	"net/textproto"
	"strconv"
)

// replyReader reads SMTP replies (RFC 5321 4.2) from a session's buffered reader exactly as
// net/textproto's Reader.ReadResponse(0) reads them: the same lines (split by bufio's
// ReadLine, of any length), the same code checks, the text of a multi-line reply joined
// with "\n" (a continuation line with another code, or none, kept whole), and the same
// errors. What differs is the cost: ReadResponse makes two strings per line, replyReader
// assembles the text in buffers it reuses, so that a reply the caller does not keep costs
// no allocation. One session's goroutine uses it.
type replyReader struct {
	line []byte // a line longer than the bufio.Reader's buffer, assembled
	text []byte // the reply's text
}

// maxKept is the capacity beyond which a buffer is let go after a reply rather than kept
// for the next: a server's one long reply does not pin its memory for the connection's life.
const maxKept = 64 << 10

// read reads one reply from r. text is valid until the next call. err is the read's error,
// or a textproto.ProtocolError for a reply that is not one, as ReadResponse(0) returns it.
func (rr *replyReader) read(r *bufio.Reader) (code int, text []byte, err error) {
	defer rr.trim()
	line, err := rr.readLine(r)
	if err != nil {
		return 0, nil, err
	}
	code, continued, msg, bad := parseReplyLine(line)
	if bad {
		// ReadResponse reads on after a malformed first line that announces more ("abc-"):
		// no later line can end that reply, so only a read error ends it.
		for continued {
			if _, err := rr.readLine(r); err != nil {
				return 0, nil, err
			}
		}
		return replyLineError(line)
	}
	rr.text = append(rr.text[:0], msg...)
	for continued {
		line, err := rr.readLine(r)
		if err != nil {
			return 0, nil, err
		}
		code2, more, msg2, bad2 := parseReplyLine(line)
		rr.text = append(rr.text, '\n')
		if bad2 || code2 != code {
			rr.text = append(rr.text, bytes.TrimRight(line, "\r\n")...)
			continue
		}
		rr.text = append(rr.text, msg2...)
		continued = more
	}
	return code, rr.text, nil
}

// trim lets go of a buffer a long reply grew.
func (rr *replyReader) trim() {
	if cap(rr.line) > maxKept {
		rr.line = nil
	}
	if cap(rr.text) > maxKept {
		rr.text = nil
	}
}

// readLine reads a line as textproto's Reader.ReadLine does, without its line ending. The
// line is valid until the next call.
func (rr *replyReader) readLine(r *bufio.Reader) ([]byte, error) {
	l, more, err := r.ReadLine()
	if err != nil {
		return nil, err
	}
	if !more {
		return l, nil
	}
	rr.line = append(rr.line[:0], l...)
	for more {
		if l, more, err = r.ReadLine(); err != nil {
			return nil, err
		}
		rr.line = append(rr.line, l...)
	}
	return rr.line, nil
}

// parseReplyLine splits a reply line "250-text" or "250 text" as textproto does: bad when the
// line is not one (then the reply's code and error come from replyLineError); continued
// is read before the code is checked, as textproto reads it.
func parseReplyLine(line []byte) (code int, continued bool, msg []byte, bad bool) {
	if len(line) < 4 || line[3] != ' ' && line[3] != '-' {
		return 0, false, nil, true
	}
	continued = line[3] == '-'
	for _, c := range line[:3] {
		if c < '0' || c > '9' {
			return 0, continued, nil, true
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return 0, continued, nil, true
	}
	return code, continued, line[4:], false
}

// replyLineError returns what ReadResponse(0) returns for a malformed first line: the code
// strconv.Atoi makes of its first three bytes ("+12" is 12), no text, and a ProtocolError
// quoting the line.
func replyLineError(line []byte) (int, []byte, error) {
	s := string(line)
	if len(s) < 4 || s[3] != ' ' && s[3] != '-' {
		return 0, nil, textproto.ProtocolError(fmt.Sprintf("short response: %q", s))
	}
	code, _ := strconv.Atoi(s[0:3])
	return code, nil, textproto.ProtocolError(fmt.Sprintf("invalid response code: %q", s))
}
