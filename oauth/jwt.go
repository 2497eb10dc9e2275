package oauth

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// signRS256 builds a compact JWS (RFC 7515) of claims with header, signed RS256. It exists
// because golang.org/x/oauth2/jws's fixed header type cannot carry x5t#S256.
func signRS256(header, claims map[string]any, key *rsa.PrivateKey) (string, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// Claims are the claims of an access token that is a readable JWT (Entra ID's are; Google's
// are opaque), for probes and for the expiry of a token file. They are read, not verified:
// the token is the server's business.
type Claims struct {
	Audience []string
	Scopes   []string
	Roles    []string
	Issuer   string
	AppID    string
	Expiry   int64
}

// ReadClaims decodes the payload of a JWT-shaped token without checking its signature.
func ReadClaims(token string) (Claims, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Claims{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return Claims{}, false
	}
	var raw struct {
		Aud   any         `json:"aud"`
		Scp   any         `json:"scp"`
		Scope string      `json:"scope"`
		Roles []string    `json:"roles"`
		Iss   string      `json:"iss"`
		AppID string      `json:"appid"`
		Azp   string      `json:"azp"`
		Exp   json.Number `json:"exp"`
	}
	d := json.NewDecoder(strings.NewReader(string(payload)))
	d.UseNumber()
	if err := d.Decode(&raw); err != nil {
		return Claims{}, false
	}
	c := Claims{Audience: stringList(raw.Aud), Scopes: stringList(raw.Scp), Roles: raw.Roles, Issuer: raw.Iss, AppID: raw.AppID}
	if c.AppID == "" {
		c.AppID = raw.Azp
	}
	if len(c.Scopes) == 0 && raw.Scope != "" {
		c.Scopes = strings.Fields(raw.Scope)
	}
	if f, err := raw.Exp.Float64(); err == nil {
		c.Expiry = int64(f)
	}
	return c, true
}

// stringList reads a claim that is a string (space-separated) or a list of strings.
func stringList(v any) []string {
	switch x := v.(type) {
	case string:
		return strings.Fields(x)
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
