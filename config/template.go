package config

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseTemplate parses a Fluent Bit record accessor template:
//
//	$TAG            the whole tag
//	$TAG[n]         part n (from 0) of the tag split on dots
//	$key            a top-level record key (letters, digits, _ and -)
//	$key['a']['b']  a nested key; "" quotes work too
//	$key[0]         an element of an array (also $key['a'][2])
//	$$              a literal $
//
// Anything else after a $ is an error that says where.
func ParseTemplate(s string) (Template, error) {
	t := Template{Raw: s}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.Tokens = append(t.Tokens, Token{Kind: Literal, Text: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		if s[i] != '$' {
			lit.WriteByte(s[i])
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			lit.WriteByte('$')
			i += 2
			continue
		}
		tok, n, err := parseToken(s[i:])
		if err != nil {
			return Template{Raw: s}, fmt.Errorf("at offset %d: %v", i, err)
		}
		flush()
		t.Tokens = append(t.Tokens, tok)
		i += n
	}
	flush()
	return t, nil
}

func isKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// parseToken parses one token starting at the $ of s and returns it with its length.
func parseToken(s string) (Token, int, error) {
	i := 1
	for i < len(s) && isKeyByte(s[i]) {
		i++
	}
	name := s[1:i]
	if name == "" {
		return Token{}, 0, fmt.Errorf("$ must be followed by TAG or a key name (write $$ for a literal $)")
	}
	if name == "TAG" {
		if i < len(s) && s[i] == '[' {
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return Token{}, 0, fmt.Errorf("unterminated $TAG[")
			}
			n, err := strconv.Atoi(s[i+1 : i+end])
			if err != nil || n < 0 {
				return Token{}, 0, fmt.Errorf("$TAG[%s]: the index must be a whole number from 0", s[i+1:i+end])
			}
			return Token{Kind: TagPartToken, Index: n}, i + end + 1, nil
		}
		return Token{Kind: TagToken}, i, nil
	}
	path := []string{name}
	for i < len(s) && s[i] == '[' {
		if j := i + 1; j < len(s) && s[j] >= '0' && s[j] <= '9' { // an array index: $key[0]
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			if j >= len(s) || s[j] != ']' {
				return Token{}, 0, fmt.Errorf("$%s: expected ] after the array index %s", name, s[i+1:j])
			}
			path = append(path, s[i+1:j])
			i = j + 1
			continue
		}
		if i+1 >= len(s) || (s[i+1] != '\'' && s[i+1] != '"') {
			return Token{}, 0, fmt.Errorf("$%s: a sub-key must be quoted, as in ['name'], or an array index, as in [0]", name)
		}
		q := s[i+1]
		end := strings.IndexByte(s[i+2:], q)
		if end < 0 {
			return Token{}, 0, fmt.Errorf("$%s: unterminated quote in a sub-key", name)
		}
		key := s[i+2 : i+2+end]
		j := i + 2 + end + 1
		if j >= len(s) || s[j] != ']' {
			return Token{}, 0, fmt.Errorf("$%s: expected ] after the sub-key %q", name, key)
		}
		if key == "" {
			return Token{}, 0, fmt.Errorf("$%s: empty sub-key", name)
		}
		path = append(path, key)
		i = j + 1
	}
	return Token{Kind: KeyToken, Path: path}, i, nil
}
