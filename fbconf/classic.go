package fbconf

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// classicFile parses one classic file, appending its sections and reading its includes where
// they appear, as Fluent Bit does.
//
// The rules are Fluent Bit's (src/config_format/flb_cf_fluentbit.c): a line starting with #
// is a comment; "@INCLUDE path" reads another file (relative paths are taken from the main
// file's directory, then from the including file's; * globs); "@SET KEY=VALUE" sets a
// variable; "[NAME]" starts a section; every other line is "Key Value", indented the same
// way throughout the file (a deeper level by exactly one more indent is group content, as in
// [MULTILINE_PARSER]); a key without a value is an error.
func (l *loader) classicFile(path string, data []byte, from Pos) error {
	if err := l.enter(path, from); err != nil {
		return err
	}
	var (
		indent  string
		section = -1 // index into l.cfg.Sections
	)
	lines := strings.Split(string(data), "\n")
	for n, line := range lines {
		pos := Pos{File: path, Line: n + 1}
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" || line[0] == '#' {
			continue
		}
		if len(line) > 9 && strings.EqualFold(line[:9], "@INCLUDE ") {
			pattern := strings.TrimSpace(line[9:])
			files, err := l.expandInclude(pattern, uniqueDirs(l.root, filepath.Dir(path)), pos)
			if err != nil {
				return err
			}
			for _, f := range files {
				sub, err := os.ReadFile(f)
				if err != nil {
					return &Error{Pos: pos, Msg: fmt.Sprintf("include %q: %v", pattern, err)}
				}
				if err := l.classicFile(f, sub, pos); err != nil {
					return err
				}
			}
			// Keys after an @INCLUDE still belong to this file's current section, as in
			// Fluent Bit, whose reader keeps the section per file.
			continue
		}
		if line[0] == '@' {
			l.meta(line, pos)
			continue
		}
		if line[0] == '[' {
			end := strings.IndexByte(line, ']')
			if end < 1 {
				return &Error{Pos: pos, Msg: "bad section header: expected [NAME]"}
			}
			name := strings.ToLower(strings.TrimSpace(line[1:end]))
			l.cfg.Sections = append(l.cfg.Sections, Section{Kind: name, Pos: pos})
			section = len(l.cfg.Sections) - 1
			continue
		}
		// A key line.
		lead := len(line) - len(strings.TrimLeft(line, " \t"))
		if indent == "" {
			if lead == 0 {
				return &Error{Pos: pos, Msg: "key lines must be indented under their [SECTION] header"}
			}
			indent = line[:lead]
		}
		if !strings.HasPrefix(line, indent) {
			return &Error{Pos: pos, Msg: "invalid indentation level: use the same indentation for every key"}
		}
		if extra := line[len(indent):]; extra != "" && (extra[0] == ' ' || extra[0] == '\t') {
			more := len(extra) - len(strings.TrimLeft(extra, " \t"))
			if more != len(indent) {
				return &Error{Pos: pos, Msg: "extra indentation level found"}
			}
		}
		body := strings.TrimSpace(line)
		if body[0] == '#' {
			continue
		}
		if body[0] == '[' {
			// A group inside a section ([MULTILINE_PARSER] rules...): not an output key.
			continue
		}
		if section < 0 {
			return &Error{Pos: pos, Msg: "key outside any [SECTION]"}
		}
		i := strings.IndexAny(body, " \t")
		if i < 0 {
			return &Error{Pos: pos, Msg: fmt.Sprintf("key %q has no value", body)}
		}
		s := &l.cfg.Sections[section]
		key := strings.ToLower(body[:i])
		for _, e := range s.Entries {
			if e.Key == key {
				l.warn(pos, "%s is set again (first at line %d): the plugin sees only the first value", key, e.Pos.Line)
				break
			}
		}
		s.Entries = append(s.Entries, Entry{Key: key, Value: strings.TrimSpace(body[i:]), Pos: pos})
	}
	return nil
}

// meta handles an @ line other than @INCLUDE: @SET KEY=VALUE sets a variable; anything else
// draws a warning.
func (l *loader) meta(line string, pos Pos) {
	fields := strings.SplitN(line, " ", 2)
	if !strings.EqualFold(fields[0], "@SET") {
		l.warn(pos, "%s: unknown directive, ignored", fields[0])
		return
	}
	if len(fields) < 2 {
		l.warn(pos, "@SET without KEY=VALUE, ignored")
		return
	}
	kv := strings.TrimSpace(fields[1])
	eq := strings.IndexByte(kv, '=')
	if eq <= 0 {
		l.warn(pos, "@SET %s: expected KEY=VALUE, ignored", kv)
		return
	}
	l.vars[strings.TrimSpace(kv[:eq])] = strings.TrimSpace(kv[eq+1:])
}

// uniqueDirs returns the non-empty directories given, without repeats, in order.
func uniqueDirs(dirs ...string) []string {
	var out []string
	for _, d := range dirs {
		if d == "" {
			continue
		}
		dup := false
		for _, o := range out {
			if filepath.Clean(o) == filepath.Clean(d) {
				dup = true
			}
		}
		if !dup {
			out = append(out, d)
		}
	}
	return out
}
