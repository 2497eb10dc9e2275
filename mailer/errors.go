package mailer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"

	"github.com/smtpout/smtpout/oauth"
)

// Outcome is what became of one message.
type Outcome int

// The outcomes of a message.
const (
	// Delivered: the server accepted the message for at least one recipient.
	Delivered Outcome = iota
	// Rejected: permanently refused (5xx for every recipient or for the message): do not retry.
	Rejected
	// Retry: not delivered, but it may succeed later (4xx, network error, timeout, TLS or AUTH
	// failure): send it again.
	Retry
)

// String returns "delivered", "rejected" or "retry".
func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case Rejected:
		return "rejected"
	case Retry:
		return "retry"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Step names the part of an SMTP session an error happened in.
type Step string

// The steps of an SMTP session.
const (
	StepDial     Step = "dial"
	StepTLS      Step = "TLS"
	StepGreeting Step = "greeting"
	StepEHLO     Step = "EHLO"
	StepSTARTTLS Step = "STARTTLS"
	StepAUTH     Step = "AUTH"
	StepMAIL     Step = "MAIL"
	StepRCPT     Step = "RCPT"
	StepDATA     Step = "DATA"
	StepRSET     Step = "RSET"
	StepQUIT     Step = "QUIT"
)

// setupStep reports whether s belongs to opening a connection (before any transaction).
func setupStep(s Step) bool {
	switch s {
	case StepDial, StepTLS, StepGreeting, StepEHLO, StepSTARTTLS, StepAUTH, StepToken:
		return true
	}
	return false
}

// StepError is a failed SMTP step: the step, the server's reply (when there was one), a hint
// for the operator (when the cause is a known configuration mistake) and the underlying error.
// Its text never contains a password.
type StepError struct {
	// Step is where it failed.
	Step Step
	// Addr is the server address ("host:port"), or for StepRCPT the recipient refused.
	Addr string
	// Code and EnhancedCode are the server's reply code ("550") and enhanced status code
	// ("5.1.1"); 0 and "" when the server did not reply (network error, timeout, TLS).
	Code         int
	EnhancedCode string
	// Message is the server's reply text, without the codes.
	Message string
	// Hint tells the operator what to change, or is "".
	Hint string
	// Err is the underlying error (a network, TLS or protocol error), or nil for a plain reply.
	Err error

	operator bool
	// refused: the server refused the OAuth token (535, 5.7.x or an error challenge); token is
	// the token it refused and challenge what its error challenge said. Never printed.
	refused   bool
	token     oauth.Token
	challenge string
}

// Error returns "<step> <addr>: <code> <enhanced> <text>[: <err>][ (<hint>)]".
func (e *StepError) Error() string {
	var b strings.Builder
	b.WriteString("smtp ")
	b.WriteString(string(e.Step))
	if e.Addr != "" {
		b.WriteString(" ")
		b.WriteString(e.Addr)
	}
	b.WriteString(":")
	if e.Code != 0 {
		fmt.Fprintf(&b, " %d", e.Code)
		if e.EnhancedCode != "" {
			b.WriteString(" " + e.EnhancedCode)
		}
		if e.Message != "" {
			b.WriteString(" " + e.Message)
		}
	}
	if e.Err != nil && (e.Code == 0 || !isReplyError(e.Err)) {
		if e.Code != 0 {
			b.WriteString(":")
		}
		b.WriteString(" ")
		b.WriteString(e.Err.Error())
	}
	if e.Hint != "" {
		b.WriteString(" (" + e.Hint + ")")
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *StepError) Unwrap() error { return e.Err }

// Operator reports whether the failure needs an operator to act (AUTH refused or not offered,
// certificate not trusted or not matching, implicit TLS/STARTTLS mismatch): retrying alone will
// not fix it. Such errors carry a Hint.
func (e *StepError) Operator() bool { return e.operator }

// Temporary reports whether the server's reply was a 4xx (transient) code.
func (e *StepError) Temporary() bool { return e.Code >= 400 && e.Code < 500 }

func isReplyError(err error) bool {
	var te *textproto.Error
	return errors.As(err, &te)
}

// Classify decides the Outcome of one message's transaction from the number of recipients the
// server accepted, the recipients it refused, and the error the transaction ended with (nil when
// the server accepted the message). It is pure.
//   - The message accepted (err nil) with at least one recipient: Delivered, even when other
//     recipients were refused, with 4xx or 5xx (see Result).
//   - Every recipient refused (err from the RCPT step): Retry if any refusal was a 4xx, else
//     Rejected.
//   - A 5xx reply to MAIL or to DATA (the command or the message): Rejected; an envelope address
//     that cannot be sent (ErrInvalidAddress): Rejected.
//   - A provider's quota or throttling reply (QuotaReply: Exchange Online's 554 5.2.0
//     SubmissionQuotaExceeded, Gmail's 550 5.4.5 ...), to any step or for every recipient:
//     Retry, since the message is fine and the quota comes back.
//   - Anything else: Retry. That covers 4xx replies, network errors, timeouts, a cancelled
//     context, and every failure while opening the connection (TLS, EHLO, AUTH: even a 535 is
//     retried, since the record is fine and the configuration is what must change), and a 5xx
//     that needs an operator (530 authentication required).
func Classify(accepted int, rejected []RecipientError, err error) Outcome {
	if err == nil {
		if accepted > 0 {
			return Delivered
		}
		return refusedOutcome(rejected, 0)
	}
	if errors.Is(err, ErrInvalidAddress) {
		return Rejected
	}
	var se *StepError
	if !errors.As(err, &se) || se.operator || setupStep(se.Step) {
		return Retry
	}
	if _, quota := QuotaReply(se.Step, se.Code, se.EnhancedCode, se.Message); quota {
		return Retry
	}
	switch se.Step {
	case StepRCPT:
		if se.Code == 0 {
			return Retry // connection lost among the RCPTs
		}
		return refusedOutcome(rejected, se.Code)
	case StepMAIL, StepDATA:
		if se.Code >= 500 && se.Code < 600 {
			return Rejected
		}
	}
	return Retry
}

// refusedOutcome is the outcome when no recipient was accepted: Rejected only when every
// refusal (and code, if any) is permanent and none is a provider's quota reply.
func refusedOutcome(rejected []RecipientError, code int) Outcome {
	if len(rejected) == 0 && (code < 500 || code >= 600) {
		return Retry
	}
	if code != 0 && (code < 500 || code >= 600) {
		return Retry
	}
	for _, r := range rejected {
		if r.Owed() {
			return Retry
		}
	}
	return Rejected
}

// replyError turns a reply error from textproto into a StepError with its codes.
func replyError(step Step, addr string, err error) *StepError {
	se := &StepError{Step: step, Addr: addr, Err: err}
	var te *textproto.Error
	if errors.As(err, &te) {
		se.Code = te.Code
		se.EnhancedCode, se.Message = splitEnhanced(te.Code, te.Msg)
	}
	if step == StepMAIL && se.Code == 530 {
		se.operator = true
		se.Hint = "the server requires authentication: set username and password"
	}
	return se
}

// splitEnhanced splits "5.1.1 user unknown" into its enhanced status code and text (RFC 3463).
// Multi-line replies are joined with "; ".
func splitEnhanced(code int, msg string) (enh, text string) {
	msg = strings.ReplaceAll(strings.TrimSpace(msg), "\n", "; ")
	first, rest, _ := strings.Cut(msg, " ")
	if isEnhanced(code, first) {
		return first, rest
	}
	return "", msg
}

// isEnhanced reports whether s is an enhanced status code (RFC 3463) of the reply code's class.
func isEnhanced(code int, s string) bool {
	class, _, _, ok := splitCode(s)
	return ok && class == code/100
}

// tlsError builds the StepError for a failed TLS handshake, with a hint when the cause is a
// configuration mistake.
func tlsError(step Step, addr, serverName string, startTLS bool, err error) *StepError {
	se := &StepError{Step: step, Addr: addr, Err: err}
	var rh tls.RecordHeaderError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var alert tls.AlertError
	switch {
	case errors.As(err, &rh):
		se.operator = true
		if strings.HasPrefix(string(rh.RecordHeader[:]), "220") || strings.HasPrefix(string(rh.RecordHeader[:]), "554") {
			se.Hint = "the server speaks plaintext SMTP first: set is_starttls true"
		} else {
			se.Hint = "the server does not speak TLS on this port: check dest_host and is_starttls"
		}
	case errors.As(err, &ua):
		se.operator = true
		se.Hint = "the server certificate is signed by an unknown authority: set tls_ca_file to the CA that signed it"
	case errors.As(err, &hn):
		se.operator = true
		se.Hint = fmt.Sprintf("the server certificate is not valid for %q: set tls_server_name to a name it is valid for", serverName)
	case errors.As(err, &ci):
		se.operator = true
		se.Hint = "the server certificate is invalid (expired or not for TLS servers)"
	case strings.Contains(err.Error(), "protocol version not supported"):
		// A remote alert arrives as an unexported type wrapped in *net.OpError: match its text.
		se.operator = true
		se.Hint = "the server does not offer TLS 1.2 or newer, which smtpout requires: upgrade the server's TLS"
	case errors.As(err, &alert) || strings.Contains(err.Error(), "remote error: tls:"):
		se.operator = true
		se.Hint = "the server refused the TLS handshake (protocol version or cipher mismatch?)"
	case timeout(err) && !startTLS:
		se.operator = true
		se.Hint = "no TLS handshake reply: if the port expects plaintext first, set is_starttls true"
	}
	return se
}

// greetingError builds the StepError for a missing or malformed server greeting.
func greetingError(addr string, startTLS bool, err error) *StepError {
	se := replyError(StepGreeting, addr, err)
	if se.Code != 0 {
		return se
	}
	var pe textproto.ProtocolError
	if startTLS && (timeout(err) || errors.As(err, &pe) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
		se.operator = true
		se.Hint = "no SMTP greeting: the port may expect implicit TLS; set is_starttls false"
	}
	return se
}

// timeout reports whether err is a network timeout.
func timeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ctxError prefers the context's error (cancelled, deadline) over the I/O error it caused.
func ctxError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && err != nil {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	return err
}

// ErrClosed is returned for messages sent after Close.
var ErrClosed = errors.New("mailer: closed")
