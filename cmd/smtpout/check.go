package main

import (
	"fmt"
	"io"
	"slices"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/fbconf"
	"github.com/smtpout/smtpout/internal/pipeline"
)

// pluginName is the Name of the plugin's [OUTPUT] sections.
const pluginName = "smtp"

// coreKeyHints are Fluent Bit core keys that people write meaning one of the plugin's keys:
// core consumes them, so the plugin never sees them.
var coreKeyHints = map[string]string{
	"host":        "dest_host",
	"port":        "dest_host (host:port)",
	"tls":         "is_starttls (TLS is always on; is_starttls picks STARTTLS instead of implicit TLS)",
	"tls.verify":  "tls_verify",
	"tls.ca_file": "tls_ca_file",
	"tls.vhost":   "tls_server_name",
}

// loadOutputs reads a configuration and returns it with its smtp outputs.
func loadOutputs(e *env, path string) (*fbconf.Config, []fbconf.Output, error) {
	cfg, err := fbconf.LoadWith(path, fbconf.Options{LookupEnv: e.lookupEnv})
	if err != nil {
		return nil, nil, err
	}
	outs := cfg.Outputs(pluginName)
	if len(outs) == 0 {
		return cfg, nil, fmt.Errorf("%s: no [OUTPUT] section with Name %s (%d file(s) read)", path, pluginName, len(cfg.Files))
	}
	return cfg, outs, nil
}

// pickOutput loads a configuration and selects one smtp output by --output.
func pickOutput(e *env, path, selector string) (fbconf.Output, error) {
	_, outs, err := loadOutputs(e, path)
	if err != nil {
		return fbconf.Output{}, err
	}
	o, err := fbconf.FindOutput(outs, selector)
	if err != nil {
		return fbconf.Output{}, fmt.Errorf("%s: %w", path, err)
	}
	return o, nil
}

// parseOutput runs config.Parse on an output's keys, as the plugin's start-up does.
func parseOutput(o fbconf.Output) (config.Config, error) {
	return config.Parse(config.MapGetter(o.Keys))
}

// outputConfig picks the smtp output selected in path and parses its keys, as probe and send
// need; when either fails it prints why and ok is false.
func outputConfig(e *env, path, selector string) (o fbconf.Output, cfg config.Config, ok bool) {
	o, err := pickOutput(e, path, selector)
	if err != nil {
		fmt.Fprintf(e.stdout, "FAILED: %v\n", err)
		return o, cfg, false
	}
	cfg, err = parseOutput(o)
	if err != nil {
		fmt.Fprintf(e.stdout, "FAILED %s: invalid configuration (run smtpout check):\n", o.Instance)
		for _, p := range splitJoined(err) {
			fmt.Fprintf(e.stdout, "  %v\n", p)
		}
		return o, cfg, false
	}
	return o, cfg, true
}

const checkDescription = `
Reads a Fluent Bit configuration (classic or YAML, with its @INCLUDE/includes files, @SET/env
variables and the environment) and checks every [OUTPUT] whose Name is smtp with the plugin's
own start-up code. Each problem is printed as the plugin logs it when Fluent Bit starts;
warnings follow (a short secret_key, tls_verify false, unknown keys with a "did you mean"
suggestion, core Fluent Bit keys that never reach the plugin). A valid output gets one OK line
with its effective configuration, secrets redacted; when dest_host is Exchange Online or Gmail,
the provider's published limits follow, with a warning for each way the configuration can
exceed them. Nothing is sent; nothing is dialled.

Exit status: 0 when every smtp output would start, 1 when any would not (or none exists, or
the file cannot be read; with --strict also on any warning), 2 on a bad command line.`

func runCheck(e *env, args []string) int {
	fs := newFlagSet(e, "check", "-c FILE [--strict]", checkDescription)
	file := fs.String("c", "", "Fluent Bit configuration `file` (classic .conf or YAML .yaml/.yml)")
	fs.StringVar(file, "config", "", "same as -c")
	strict := fs.Bool("strict", false, "exit 1 on warnings too")
	if code, done := parseFlags(e, fs, args); done {
		return code
	}
	if *file == "" {
		return usageError(e, "check", "-c FILE is required")
	}
	if fs.NArg() > 0 {
		return usageError(e, "check", "unexpected argument %q", fs.Arg(0))
	}
	cfg, outs, err := loadOutputs(e, *file)
	if err != nil {
		fmt.Fprintf(e.stdout, "FAILED: %v\n", err)
		return exitFail
	}
	warnings := 0
	for _, w := range cfg.Warnings {
		fmt.Fprintf(e.stdout, "warning: %s\n", w)
		warnings++
	}
	failed := 0
	for _, o := range outs {
		ok, nw := checkOutput(e.stdout, o)
		warnings += nw
		if !ok {
			failed++
		}
	}
	for _, w := range hotReloadWarnings(cfg, outs) {
		fmt.Fprintf(e.stdout, "warning: %s\n", w)
		warnings++
	}
	fmt.Fprintf(e.stdout, "%d smtp output(s): %d OK, %d FAILED, %d warning(s)\n", len(outs), len(outs)-failed, failed, warnings)
	if failed > 0 || *strict && warnings > 0 {
		return exitFail
	}
	return exitOK
}

// checkLogger prints the plugin's start-up lines as Fluent Bit would, without the time stamp;
// info lines (the "started" and "stopped" lines) are left out: checkOutput prints its own.
type checkLogger struct {
	w        io.Writer
	name     string
	errors   int
	warnings int
}

func (l *checkLogger) Enabled(level pipeline.Level) bool { return level <= pipeline.LevelWarn }

func (l *checkLogger) Log(level pipeline.Level, msg string) {
	switch level {
	case pipeline.LevelError:
		l.errors++
	case pipeline.LevelWarn:
		l.warnings++
	default:
		return
	}
	fmt.Fprintf(l.w, "  [%s] %s%s\n", level, pipeline.Prefix(l.name), pipeline.OneLine(msg))
}

// checkOutput checks one output and reports whether it would start, and how many warnings
// it drew.
func checkOutput(w io.Writer, o fbconf.Output) (ok bool, warnings int) {
	title := fmt.Sprintf("%s: [OUTPUT] %s", o.Pos, o.Instance)
	if o.Alias != "" {
		title += fmt.Sprintf(" (alias %s)", o.Alias)
	}
	fmt.Fprintln(w, title)

	log := &checkLogger{w: w, name: o.Label()}
	in := pipeline.Open(config.MapGetter(o.Keys), log, pipeline.Options{SkipLedgerFile: true}) // Fluent Bit may hold the ledger
	if in != nil {
		_ = in.Close() // nothing was dialled: closing only releases the instance
	}
	for _, uw := range o.UnknownKeys(config.Keys) {
		fmt.Fprintf(w, "  [ warn] %s\n", uw)
		warnings++
	}
	for _, k := range sortedKeys(o.KeyPos) {
		if hint, found := coreKeyHints[k]; found {
			fmt.Fprintf(w, "  [ warn] %s: %s is a Fluent Bit core key and never reaches the plugin: use %s\n", o.KeyPos[k], k, hint)
			warnings++
		}
	}
	warnings += log.warnings
	if in == nil || log.errors > 0 {
		fmt.Fprintf(w, "FAILED %s: Fluent Bit would refuse to start (%d error line(s) above)\n", o.Label(), log.errors)
		return false, warnings
	}
	cfg, err := parseOutput(o)
	if err != nil { // cannot happen: Open parsed the same keys
		fmt.Fprintf(w, "FAILED %s: %v\n", o.Label(), err)
		return false, warnings
	}
	fmt.Fprintf(w, "OK %s: %s\n", o.Label(), cfg.Effective())
	warnings += providerReport(w, o, cfg) // provider.go
	return true, warnings
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
