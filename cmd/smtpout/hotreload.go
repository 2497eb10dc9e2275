package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/smtpout/smtpout/fbconf"
)

// hotReloadWarnings warns about every smtp output with Workers >= 1 in a configuration that
// turns hot reload on ([SERVICE] Hot_Reload On, YAML service: hot_reload: on): Fluent Bit
// 4.2.8 and 5.1.1 start a second, never-stopped worker pool for a Go output with workers, and
// its timer uses the freed instance after a reload, so the second reload crashes Fluent Bit
// (README: Hot reload; test/reload-crash). The -Y/--enable-hot-reload command-line flag is
// not in the file and cannot be seen here.
func hotReloadWarnings(cfg *fbconf.Config, outs []fbconf.Output) []string {
	at, on := hotReloadOn(cfg)
	if !on {
		return nil
	}
	var out []string
	for _, o := range outs {
		v, ok := o.Keys["workers"]
		if n, err := strconv.Atoi(strings.TrimSpace(v)); !ok || err != nil || n < 1 {
			continue
		}
		out = append(out, fmt.Sprintf("%s: %s has Workers %s and hot reload is on (%s): Fluent Bit crashes "+
			"(SIGSEGV) on the second hot reload of a Go output with workers; use Workers 0 with hot "+
			"reload, or turn hot reload off and restart Fluent Bit when the configuration changes",
			o.KeyPos["workers"], o.Label(), strings.TrimSpace(v), at))
	}
	return out
}

// hotReloadOn reports whether a service section turns hot reload on, and where.
func hotReloadOn(cfg *fbconf.Config) (fbconf.Pos, bool) {
	for _, s := range cfg.Sections {
		if s.Kind != "service" {
			continue
		}
		for _, e := range s.Entries {
			if e.Key != "hot_reload" {
				continue
			}
			switch strings.ToLower(strings.TrimSpace(e.Value)) {
			case "on", "true", "yes":
				return e.Pos, true
			}
		}
	}
	return fbconf.Pos{}, false
}
