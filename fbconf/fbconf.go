// Package fbconf reads Fluent Bit configuration files, classic (`[OUTPUT]` sections with
// `@INCLUDE` and `@SET`) and YAML (`pipeline: outputs:`), into a list of sections, so the
// command-line tool can find every `smtp` output and check it with the plugin's own code.
//
// It follows Fluent Bit's own rules where they matter for an output's keys: keys are
// case-insensitive (lower-cased here), `${VAR}` is replaced by a variable set with `@SET` (or
// the YAML `env:` section) and then by the environment, an unset variable becomes empty text,
// and a key whose value ends up empty is treated as absent. It never prints values: callers
// decide what to show, so secrets stay with them.
package fbconf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Format is the syntax of a configuration file.
type Format int

// The configuration formats.
const (
	// Classic is Fluent Bit's INI-like format: [SECTION] headers and indented "Key Value" lines.
	Classic Format = iota
	// YAML is Fluent Bit's YAML format: service, pipeline: inputs/filters/outputs, env, includes.
	YAML
)

// String names the format.
func (f Format) String() string {
	if f == YAML {
		return "yaml"
	}
	return "classic"
}

// Pos is a place in a configuration file.
type Pos struct {
	File string
	Line int
}

// String returns "file:line", or just the file when the line is unknown.
func (p Pos) String() string {
	if p.Line <= 0 {
		return p.File
	}
	return p.File + ":" + strconv.Itoa(p.Line)
}

// Entry is one key of a section.
type Entry struct {
	// Key is lower-cased.
	Key string
	// Value has had ${VAR} references replaced. Nested YAML values (processors: ...) read "".
	Value string
	// Nested is true for a YAML map or list value, which has no string form.
	Nested bool
	Pos    Pos
}

// Section is one [SECTION] of a classic file or one item of a YAML list such as
// pipeline.outputs.
type Section struct {
	// Kind is the lower-cased section name: "service", "input", "filter", "output", "parser"...
	Kind    string
	Pos     Pos
	Entries []Entry
}

// Get returns the value of the first entry named key (lower-case), and whether it is present.
func (s Section) Get(key string) (string, bool) {
	for _, e := range s.Entries {
		if e.Key == key {
			return e.Value, true
		}
	}
	return "", false
}

// Warning is a problem that does not stop Fluent Bit from starting.
type Warning struct {
	Pos Pos
	Msg string
}

// String returns "file:line: message".
func (w Warning) String() string {
	if w.Pos.File == "" {
		return w.Msg
	}
	return w.Pos.String() + ": " + w.Msg
}

// Error is a problem that makes Fluent Bit refuse the configuration file.
type Error struct {
	Pos Pos
	Msg string
}

// Error returns "file:line: message".
func (e *Error) Error() string {
	if e.Pos.File == "" {
		return e.Msg
	}
	return e.Pos.String() + ": " + e.Msg
}

// Config is a whole configuration: the main file, everything it includes, and its sections in
// the order Fluent Bit reads them.
type Config struct {
	Format Format
	// Files lists the main file then every included file, in the order they were read.
	Files    []string
	Sections []Section
	// Warnings are problems Fluent Bit accepts: an unset variable, a key set twice...
	Warnings []Warning
}

// Options changes how Load reads a configuration.
type Options struct {
	// LookupEnv reads an environment variable (os.LookupEnv when nil).
	LookupEnv func(name string) (string, bool)
}

// Load reads the configuration file at path and every file it includes. The format is YAML
// when the name ends in .yaml or .yml, classic when it ends in .conf, and otherwise guessed
// from the content.
func Load(path string) (*Config, error) { return LoadWith(path, Options{}) }

// maxFiles bounds how many files one configuration may include, as Fluent Bit does.
const maxFiles = 500

// LoadWith is Load with options.
func LoadWith(path string, opt Options) (*Config, error) {
	if opt.LookupEnv == nil {
		opt.LookupEnv = os.LookupEnv
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	l := &loader{opt: opt, vars: map[string]string{}, seen: map[string]bool{}}
	format := DetectFormat(path, data)
	l.cfg.Format = format
	if format == YAML {
		err = l.yamlFile(path, data, Pos{})
	} else {
		l.root = filepath.Dir(path)
		err = l.classicFile(path, data, Pos{})
	}
	if err != nil {
		return nil, err
	}
	l.substitute()
	return &l.cfg, nil
}

// DetectFormat says whether data, read from path, is a classic or a YAML configuration.
func DetectFormat(path string, data []byte) Format {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		return YAML
	case ".conf":
		return Classic
	}
	for _, line := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if strings.HasPrefix(t, "[") || strings.HasPrefix(t, "@") {
			return Classic
		}
		if strings.HasPrefix(t, "---") || strings.HasPrefix(t, "- ") {
			return YAML
		}
		if i := strings.IndexAny(t, ": \t"); i > 0 && t[i] == ':' {
			return YAML
		}
		return Classic
	}
	return Classic
}

// loader holds the state of one Load.
type loader struct {
	opt  Options
	cfg  Config
	root string            // classic: the main file's directory
	vars map[string]string // @SET and YAML env:
	seen map[string]bool   // absolute paths already read
}

func (l *loader) warn(pos Pos, format string, args ...any) {
	l.cfg.Warnings = append(l.cfg.Warnings, Warning{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// enter records that path is being read and refuses include loops and runaway includes.
func (l *loader) enter(path string, from Pos) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	if l.seen[abs] {
		return &Error{Pos: from, Msg: fmt.Sprintf("%s is included twice (an include loop?)", path)}
	}
	if len(l.seen) >= maxFiles {
		return &Error{Pos: from, Msg: fmt.Sprintf("more than %d configuration files", maxFiles)}
	}
	l.seen[abs] = true
	l.cfg.Files = append(l.cfg.Files, path)
	return nil
}

// expandInclude resolves an include pattern to the files it names: absolute as is, relative
// to dir, globs expanded and sorted. A glob that matches nothing is a warning, as in Fluent
// Bit; a plain path that does not exist is an error.
func (l *loader) expandInclude(pattern string, dirs []string, pos Pos) ([]string, error) {
	pattern = l.expandVars(pattern, pos)
	candidates := []string{pattern}
	if !filepath.IsAbs(pattern) {
		candidates = candidates[:0]
		for _, d := range dirs {
			candidates = append(candidates, filepath.Join(d, pattern))
		}
	}
	if strings.ContainsAny(pattern, "*?[") {
		for _, c := range candidates {
			matches, err := filepath.Glob(c)
			if err != nil {
				return nil, &Error{Pos: pos, Msg: fmt.Sprintf("include %q: %v", pattern, err)}
			}
			if len(matches) > 0 {
				return matches, nil // filepath.Glob sorts
			}
		}
		l.warn(pos, "include %q matches no file", pattern)
		return nil, nil
	}
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return []string{c}, nil
		}
	}
	return nil, &Error{Pos: pos, Msg: fmt.Sprintf("include %q: no such file", pattern)}
}

// substitute replaces ${VAR} references in every value once every @SET and env: is known:
// Fluent Bit too applies variables when the configuration is loaded, not line by line.
func (l *loader) substitute() {
	for i := range l.cfg.Sections {
		s := &l.cfg.Sections[i]
		for j := range s.Entries {
			e := &s.Entries[j]
			if !e.Nested {
				e.Value = strings.TrimSpace(l.expandVars(e.Value, e.Pos))
			}
		}
	}
}

// expandVars replaces each ${NAME} by the variable set with @SET or env:, else the
// environment variable, else "" (with a warning, as Fluent Bit gives).
func (l *loader) expandVars(s string, pos Pos) string {
	if !strings.Contains(s, "${") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			break
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			break
		}
		name := s[i+2 : i+2+end]
		b.WriteString(s[:i])
		if v, ok := l.vars[name]; ok {
			b.WriteString(v)
		} else if v, ok := l.opt.LookupEnv(name); ok {
			b.WriteString(v)
		} else {
			l.warn(pos, "variable ${%s} is used but not set: it reads as empty", name)
		}
		s = s[i+2+end+1:]
	}
	b.WriteString(s)
	return b.String()
}

// Output is one [OUTPUT] section, ready for config.Parse through config.MapGetter(o.Keys).
type Output struct {
	// Name is the plugin name as written (e.g. "smtp").
	Name string
	// Instance is Fluent Bit's instance name: the plugin name and the section's index among
	// every output of the configuration ("smtp.0", "smtp.2"), as in its log lines.
	Instance string
	// Alias is the alias key's value, "" when unset.
	Alias string
	// Index is the section's position among every output, from 0.
	Index int
	Pos   Pos
	// Keys holds every key lower-cased, with ${VAR} replaced; a key set twice keeps its first
	// value, as Fluent Bit hands the plugin the first. Keys whose value is empty are left out,
	// as Fluent Bit leaves them out.
	Keys map[string]string
	// KeyPos is where each key of Keys (and each key with an empty value) was set.
	KeyPos map[string]Pos
}

// Label is how Fluent Bit names the instance in its logs: the alias if set, else Instance.
func (o Output) Label() string {
	if o.Alias != "" {
		return o.Alias
	}
	return o.Instance
}

// Outputs returns the output sections whose Name matches name case-insensitively, in order.
func (c *Config) Outputs(name string) []Output {
	var out []Output
	index := 0
	for _, s := range c.Sections {
		if s.Kind != "output" {
			continue
		}
		n, _ := s.Get("name")
		if strings.EqualFold(n, name) {
			o := Output{
				Name:     n,
				Instance: strings.ToLower(n) + "." + strconv.Itoa(index),
				Index:    index,
				Pos:      s.Pos,
				Keys:     map[string]string{},
				KeyPos:   map[string]Pos{},
			}
			for _, e := range s.Entries {
				if _, dup := o.KeyPos[e.Key]; dup {
					continue
				}
				o.KeyPos[e.Key] = e.Pos
				if e.Value != "" {
					o.Keys[e.Key] = e.Value
				}
			}
			o.Alias = o.Keys["alias"]
			out = append(out, o)
		}
		index++
	}
	return out
}

// ErrNoOutput is wrapped by FindOutput's error when no output matches the selector.
var ErrNoOutput = errors.New("no such output")

// FindOutput picks one output among outs by its alias, its instance name ("smtp.1") or its
// position among outs ("0", "1"...). An empty selector picks the only output.
func FindOutput(outs []Output, selector string) (Output, error) {
	if selector == "" {
		switch len(outs) {
		case 1:
			return outs[0], nil
		case 0:
			return Output{}, ErrNoOutput
		}
		names := make([]string, len(outs))
		for i, o := range outs {
			names[i] = o.Label()
		}
		return Output{}, fmt.Errorf("%d outputs match; choose one with --output (%s)", len(outs), strings.Join(names, ", "))
	}
	for _, o := range outs {
		if o.Alias == selector || strings.EqualFold(o.Instance, selector) {
			return o, nil
		}
	}
	if n, err := strconv.Atoi(selector); err == nil && n >= 0 && n < len(outs) {
		return outs[n], nil
	}
	return Output{}, fmt.Errorf("%q: %w (give an alias, an instance name such as smtp.0, or an index from 0)", selector, ErrNoOutput)
}
