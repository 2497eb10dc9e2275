package mailer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/wneessen/go-mail/smtp"

	"github.com/smtpout/smtpout/oauth"
)

// StepToken is obtaining the OAuth 2.0 access token that AUTH XOAUTH2 or OAUTHBEARER presents.
const StepToken Step = "token"

// AuthStats counts what authentication did: token requests by result, and AUTH refusals.
type AuthStats struct {
	TokenOK, TokenFailed int64
	AuthFailures         int64
}

// AuthStats returns the counts so far (token counts are 0 without a token source).
func (m *Mailer) AuthStats() AuthStats {
	st := AuthStats{AuthFailures: m.authFailures.Load()}
	if m.tokens != nil {
		ts := m.tokens.Stats()
		st.TokenOK, st.TokenFailed = ts.OK, ts.Failed
	}
	return st
}

// tokenAuth is the SASL client of XOAUTH2 (go-mail's) or OAUTHBEARER (RFC 7628, go-sasl's)
// for go-mail's smtp.Client. A refused token gets an error challenge (a JSON object): it is
// kept for the hint, and answered as each mechanism requires (an empty line for XOAUTH2,
// %x01 for OAUTHBEARER) so the server ends the exchange with its reply code.
type tokenAuth struct {
	mech      string // XOAUTH2 or OAUTHBEARER
	user      string
	token     string
	host      string
	port      int
	challenge []byte
}

func (a *tokenAuth) Start(info *smtp.ServerInfo) (string, []byte, error) {
	if a.mech == "XOAUTH2" {
		return smtp.XOAuth2Auth(a.user, a.token).Start(info)
	}
	c := sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: a.user, Token: a.token, Host: a.host, Port: a.port})
	_, ir, err := c.Start()
	return sasl.OAuthBearer, ir, err
}

func (a *tokenAuth) Next(from []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	if a.challenge != nil {
		return nil, errors.New("unexpected second challenge")
	}
	a.challenge = append([]byte{}, from...)
	if a.mech == "XOAUTH2" {
		return []byte{}, nil
	}
	return []byte{1}, nil
}

// challengeText describes an error challenge: `status "401", scope "..."`.
func challengeText(ch []byte) string {
	var c struct {
		Status string `json:"status"`
		Scope  string `json:"scope"`
	}
	if json.Unmarshal(ch, &c) != nil || c.Status == "" {
		return ""
	}
	s := "status " + c.Status
	if c.Scope != "" {
		s += ", scope " + c.Scope
	}
	return s
}

// tokenAuthenticate runs AUTH XOAUTH2 or OAUTHBEARER with the instance's current token. A
// refusal comes back as a *StepError with refused set and the token it refused.
func (s *session) tokenAuthenticate(ctx context.Context, mech string, pr *ProbeResult) error {
	m, addr := s.m, s.m.addr
	tok, err := m.tokens.Token(ctx)
	if err != nil {
		return tokenStepError(err)
	}
	pr.token(m.tokens.Endpoint(), tok)
	host, portText, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portText)
	if m.tlsConfig.ServerName != "" {
		host = m.tlsConfig.ServerName
	}
	a := &tokenAuth{mech: mech, user: m.username, token: tok.Value, host: host, port: port}
	if err := s.deadline(ctx); err != nil {
		return &StepError{Step: StepAUTH, Addr: addr, Err: err}
	}
	err = s.client.Auth(a)
	if err == nil {
		m.tokens.Accepted(tok)
		return nil
	}
	var be *sasl.OAuthBearerError
	if errors.As(err, &be) { // not reached with tokenAuth's Next; kept for safety
		err = fmt.Errorf("OAUTHBEARER error challenge: %s", be.Status)
	}
	se := replyError(StepAUTH, addr, ctxError(ctx, err))
	se.token = tok
	se.challenge = challengeText(a.challenge)
	if se.Code == 535 || a.challenge != nil || se.Code >= 500 && strings.HasPrefix(se.EnhancedCode, "5.7.") {
		se.refused = true
		se.operator = true
		m.authFailures.Add(1)
	} else if se.Code >= 500 {
		se.operator = true
		m.authFailures.Add(1)
	}
	if se.challenge != "" && se.Message == "" {
		se.Message = "error challenge: " + se.challenge
	}
	return se
}

// tokenStepError is the error of a connection that could not get a token: a *StepError at
// the token step naming the token source, or, while the source backs off after servers
// refused its tokens, that refusal again (the same line, so the log's repeat filter holds it).
func tokenStepError(err error) error {
	var refusal *StepError
	if errors.As(err, &refusal) {
		return refusal
	}
	se := &StepError{Step: StepToken, Err: err, operator: true} // err names the endpoint
	var oe *oauth.Error
	if errors.As(err, &oe) && oe.Hint == "" && oe.Status == 0 {
		se.Hint = "the token endpoint cannot be reached: check auth_token_url, the network and tls_ca_file"
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		se.operator = false
	}
	return se
}

// refusalHint says what to check when the server refused a fresh token as well.
func refusalHint(host string, tok string, challenge string) string {
	var b strings.Builder
	b.WriteString("the server refused a freshly issued token")
	if challenge != "" {
		b.WriteString(" (" + challenge + ")")
	}
	if c, ok := oauth.ReadClaims(tok); ok {
		if len(c.Roles) > 0 && !contains(c.Roles, "SMTP.SendAsApp") {
			b.WriteString("; the token's roles lack SMTP.SendAsApp: add that application permission (Office 365 Exchange Online) and grant admin consent")
		}
		if len(c.Audience) > 0 && !containsPrefix(c.Audience, "https://outlook.office") && !containsPrefix(c.Audience, "00000002-0000-0ff1-ce00") {
			b.WriteString(fmt.Sprintf("; the token is for %s, not Exchange Online: set auth_scope https://outlook.office365.com/.default", strings.Join(c.Audience, " ")))
		}
	}
	h := strings.ToLower(host)
	exchange := strings.HasSuffix(h, ".office365.com") || strings.HasSuffix(h, ".outlook.com")
	google := strings.HasSuffix(h, ".gmail.com") || strings.HasSuffix(h, ".google.com") || strings.HasSuffix(h, "googlemail.com")
	if exchange || !google {
		b.WriteString("; Exchange Online: auth_scope https://outlook.office365.com/.default, the SMTP.SendAsApp permission with admin consent, the Exchange service principal (New-ServicePrincipal) with FullAccess on username's mailbox (Add-MailboxPermission), a licensed mailbox with SMTP AUTH enabled")
	}
	if google || !exchange {
		b.WriteString("; Google Workspace: domain-wide delegation of https://mail.google.com/ to the service account's client ID, and username a user of the domain")
	}
	return b.String()
}

func containsPrefix(list []string, prefix string) bool {
	for _, v := range list {
		if strings.HasPrefix(v, prefix) {
			return true
		}
	}
	return false
}
