package fbconf

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// yamlSections maps the lists under pipeline: to section kinds.
var yamlSections = map[string]string{"inputs": "input", "filters": "filter", "outputs": "output"}

// yamlFile parses one YAML configuration: env: sets variables, includes: reads other YAML
// files (relative to this file's directory, globs allowed), service: becomes a "service"
// section and each item of pipeline.inputs, .filters and .outputs an "input", "filter" or
// "output" section. Other top-level keys (parsers, multiline_parsers, plugins, customs...)
// are accepted and skipped.
func (l *loader) yamlFile(path string, data []byte, from Pos) error {
	if err := l.enter(path, from); err != nil {
		return err
	}
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return &Error{Pos: Pos{File: path}, Msg: "YAML: " + oneLine(yaml.FormatError(err, false, false))}
	}
	for _, doc := range f.Docs {
		if doc.Body == nil {
			continue
		}
		top, ok := mappingValues(doc.Body)
		if !ok {
			return &Error{Pos: l.pos(path, doc.Body), Msg: "the top level must be a mapping (service:, pipeline:, ...)"}
		}
		for _, mv := range top {
			key, _ := scalar(mv.Key)
			pos := l.pos(path, mv.Key)
			switch strings.ToLower(key) {
			case "env":
				if err := l.yamlEnv(path, mv.Value); err != nil {
					return err
				}
			case "includes":
				if err := l.yamlIncludes(path, mv.Value, pos); err != nil {
					return err
				}
			case "service":
				s, err := l.yamlSection(path, "service", mv.Value, pos)
				if err != nil {
					return err
				}
				l.cfg.Sections = append(l.cfg.Sections, s)
			case "pipeline":
				if err := l.yamlPipeline(path, mv.Value, pos); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (l *loader) pos(path string, n ast.Node) Pos {
	p := Pos{File: path}
	if n != nil {
		if t := n.GetToken(); t != nil && t.Position != nil {
			p.Line = t.Position.Line
		}
	}
	return p
}

func (l *loader) yamlEnv(path string, n ast.Node) error {
	vals, ok := mappingValues(n)
	if !ok {
		if isNull(n) {
			return nil
		}
		return &Error{Pos: l.pos(path, n), Msg: "env: must be a mapping of NAME: value"}
	}
	for _, mv := range vals {
		name, _ := scalar(mv.Key)
		v, ok := scalar(mv.Value)
		if !ok {
			return &Error{Pos: l.pos(path, mv.Key), Msg: fmt.Sprintf("env: %s must be a single value", name)}
		}
		l.vars[name] = v
	}
	return nil
}

func (l *loader) yamlIncludes(path string, n ast.Node, pos Pos) error {
	var patterns []ast.Node
	switch v := unwrap(n).(type) {
	case *ast.SequenceNode:
		patterns = v.Values
	default:
		if isNull(n) {
			return nil
		}
		if _, ok := scalar(n); !ok {
			return &Error{Pos: pos, Msg: "includes: must be a list of file names"}
		}
		patterns = []ast.Node{n}
	}
	for _, p := range patterns {
		pattern, ok := scalar(p)
		if !ok {
			return &Error{Pos: l.pos(path, p), Msg: "includes: each item must be a file name"}
		}
		files, err := l.expandInclude(pattern, []string{filepath.Dir(path)}, l.pos(path, p))
		if err != nil {
			return err
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return &Error{Pos: l.pos(path, p), Msg: fmt.Sprintf("include %q: %v", pattern, err)}
			}
			if err := l.yamlFile(f, data, l.pos(path, p)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *loader) yamlPipeline(path string, n ast.Node, pos Pos) error {
	vals, ok := mappingValues(n)
	if !ok {
		if isNull(n) {
			return nil
		}
		return &Error{Pos: pos, Msg: "pipeline: must be a mapping of inputs:, filters: and outputs:"}
	}
	for _, mv := range vals {
		key, _ := scalar(mv.Key)
		kind, known := yamlSections[strings.ToLower(key)]
		if !known {
			continue
		}
		if isNull(mv.Value) {
			continue
		}
		seq, ok := unwrap(mv.Value).(*ast.SequenceNode)
		if !ok {
			return &Error{Pos: l.pos(path, mv.Key), Msg: fmt.Sprintf("pipeline.%s must be a list of plugins (- name: ...)", key)}
		}
		for _, item := range seq.Values {
			s, err := l.yamlSection(path, kind, item, l.pos(path, item))
			if err != nil {
				return err
			}
			l.cfg.Sections = append(l.cfg.Sections, s)
		}
	}
	return nil
}

// yamlSection turns a mapping into a section of kind; nested values (processors:) are kept as
// Nested entries.
func (l *loader) yamlSection(path, kind string, n ast.Node, pos Pos) (Section, error) {
	s := Section{Kind: kind, Pos: pos}
	vals, ok := mappingValues(n)
	if !ok {
		if isNull(n) {
			return s, nil
		}
		return s, &Error{Pos: pos, Msg: fmt.Sprintf("a %s must be a mapping of key: value", kind)}
	}
	for i, mv := range vals {
		key, _ := scalar(mv.Key)
		key = strings.ToLower(key)
		epos := l.pos(path, mv.Key)
		if i == 0 {
			s.Pos = epos
		}
		for _, e := range s.Entries {
			if e.Key == key {
				l.warn(epos, "%s is set again (first at line %d): the plugin sees only the first value", key, e.Pos.Line)
				break
			}
		}
		v, ok := scalar(mv.Value)
		s.Entries = append(s.Entries, Entry{Key: key, Value: v, Nested: !ok, Pos: epos})
	}
	return s, nil
}

// unwrap looks through anchors and tags to the node they decorate.
func unwrap(n ast.Node) ast.Node {
	for {
		switch v := n.(type) {
		case *ast.AnchorNode:
			n = v.Value
		case *ast.TagNode:
			n = v.Value
		default:
			return n
		}
	}
}

func mappingValues(n ast.Node) ([]*ast.MappingValueNode, bool) {
	switch v := unwrap(n).(type) {
	case *ast.MappingNode:
		return v.Values, true
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{v}, true
	}
	return nil, false
}

func isNull(n ast.Node) bool {
	if n == nil {
		return true
	}
	_, ok := unwrap(n).(*ast.NullNode)
	return ok
}

// scalar returns a scalar node's text as Fluent Bit sees it: the string after quote
// processing, or the number, boolean or null as written. Maps and lists are not scalars.
func scalar(n ast.Node) (string, bool) {
	if n == nil {
		return "", true
	}
	switch v := unwrap(n).(type) {
	case *ast.StringNode:
		return v.Value, true
	case *ast.LiteralNode:
		if v.Value == nil {
			return "", true
		}
		return v.Value.Value, true
	case *ast.NullNode:
		return "", true
	case *ast.MappingKeyNode:
		return scalar(v.Value)
	case *ast.MappingNode, *ast.MappingValueNode, *ast.SequenceNode:
		return "", false
	case nil:
		return "", true
	default:
		if t := v.GetToken(); t != nil {
			return t.Value, true
		}
		return "", false
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
