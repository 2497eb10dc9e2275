package oauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"golang.org/x/oauth2"
)

// Error is a failed token request: the endpoint, the HTTP status and the OAuth error the
// endpoint answered (RFC 6749 5.2), and a hint for the operator. It never holds the secret,
// the assertion or a token.
type Error struct {
	Endpoint    string
	Status      int    // HTTP status, 0 when there was no answer
	Code        string // "invalid_client"
	Description string // the endpoint's error_description, without trace ids
	Text        string // what went wrong when the endpoint gave no OAuth error
	Hint        string
}

// Error returns "token endpoint URL: HTTP 401 invalid_client: description (hint)".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("token endpoint")
	if e.Endpoint != "" {
		b.WriteString(" " + e.Endpoint)
	}
	b.WriteString(":")
	if e.Status != 0 {
		fmt.Fprintf(&b, " HTTP %d", e.Status)
	}
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	if e.Text != "" {
		b.WriteString(" " + e.Text)
	}
	if e.Hint != "" {
		b.WriteString(" (" + e.Hint + ")")
	}
	return b.String()
}

// traceRE matches what Entra ID appends to error_description that differs on every request.
var traceRE = regexp.MustCompile(`(?s)\s*(Trace ID|Correlation ID|Timestamp):.*$`)

// maxDescription bounds the description kept.
const maxDescription = 300

// tokenError turns what golang.org/x/oauth2 returned into an *Error.
func tokenError(endpoint string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		if e.Endpoint == "" {
			e.Endpoint = endpoint
		}
		return e
	}
	out := &Error{Endpoint: endpoint}
	var re *oauth2.RetrieveError
	var ue *url.Error
	switch {
	case errors.As(err, &re):
		if re.Response != nil {
			out.Status = re.Response.StatusCode
		}
		out.Code, out.Description = re.ErrorCode, re.ErrorDescription
		if out.Code == "" { // golang.org/x/oauth2/jwt leaves the body unparsed
			var body struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			if json.Unmarshal(re.Body, &body) == nil {
				out.Code, out.Description = body.Error, body.Description
			}
		}
		if out.Code == "" {
			out.Text = "answered with no OAuth error"
		}
		out.Description = strings.Join(strings.Fields(traceRE.ReplaceAllString(out.Description, "")), " ")
		if len(out.Description) > maxDescription {
			out.Description = out.Description[:maxDescription] + "..."
		}
		out.Hint = hint(out.Code, out.Description)
	case errors.As(err, &ue):
		// The URL is the endpoint's: no secret is ever in it.
		out.Text = ue.Err.Error()
	default:
		out.Text = strings.TrimPrefix(err.Error(), "oauth2: ")
	}
	return out
}

// hint says what to change for the OAuth errors Entra ID and Google answer.
func hint(code, desc string) string {
	switch {
	case strings.Contains(desc, "AADSTS7000215"):
		return "the client secret is wrong: set auth_client_secret to the secret's Value (not its ID), and check it has not expired"
	case strings.Contains(desc, "AADSTS7000222"):
		return "the client secret has expired: create a new one in the app registration"
	case strings.Contains(desc, "AADSTS700027"), strings.Contains(desc, "AADSTS700023"):
		return "the assertion was refused: upload auth_client_cert_file's certificate to the app registration (Certificates & secrets)"
	case strings.Contains(desc, "AADSTS700016"):
		return "no such application in this tenant: check auth_client_id and the tenant in auth_token_url"
	case strings.Contains(desc, "AADSTS90002"):
		return "no such tenant: check the tenant id in auth_token_url"
	case strings.Contains(desc, "AADSTS70021"), strings.Contains(desc, "AADSTS700213"):
		return "no federated credential matches the assertion: check the issuer and subject (system:serviceaccount:NAMESPACE:NAME) of the app's federated credential"
	case strings.Contains(desc, "AADSTS70011"), code == "invalid_scope":
		return "the scope is not valid: check auth_scope (Exchange Online: https://outlook.office365.com/.default; Gmail: https://mail.google.com/)"
	case code == "invalid_client":
		return "the endpoint refused the client's credentials: check auth_client_id and the secret, certificate or assertion"
	case code == "unauthorized_client":
		return "the client may not use this grant or scope: for Google, authorize the service account's client ID for https://mail.google.com/ under domain-wide delegation in the Admin console"
	case code == "invalid_grant" && strings.Contains(strings.ToLower(desc), "email or user id"):
		return "username is not a user of the Google Workspace domain"
	case code == "invalid_grant":
		return "the grant was refused: check the service account key, username, or the federated credential"
	}
	return ""
}
