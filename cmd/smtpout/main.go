// Command smtpout is the operators' tool for the smtp output plugin. It uses the plugin's own
// config, output and mailer packages, so it can never disagree with the plugin:
//
//	smtpout check  -c fluent-bit.conf           validate every smtp output as Fluent Bit would
//	smtpout probe  -c fluent-bit.conf           connect, negotiate TLS, authenticate, QUIT
//	smtpout send   -c fluent-bit.conf           send records as real emails
//	smtpout verify --secret-file F [FILE.eml]   verify the signature of received emails
//
// Run "smtpout help" or "smtpout COMMAND --help" for details.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Exit codes.
const (
	exitOK    = 0 // everything checked, verified or delivered
	exitFail  = 1 // a problem was found: a bad configuration, a failed signature, a failed send
	exitUsage = 2 // the command line itself is wrong
)

// env is what a command may touch besides its arguments: it makes every command testable
// in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(e *env, args []string) int
}

var commands []command

func init() {
	commands = []command{
		{"check", "validate every smtp output of a Fluent Bit configuration, as the plugin does at start-up", runCheck},
		{"probe", "connect to an output's SMTP server: TLS, extensions, AUTH; sends nothing", runProbe},
		{"send", "send records as emails through the plugin's exact render and delivery path", runSend},
		{"verify", "verify the X-Smtpout-Signature of received emails", runVerify},
	}
}

func main() {
	os.Exit(run(os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, lookupEnv: os.LookupEnv}))
}

// run executes one command line and returns the exit code.
func run(args []string, e *env) int {
	if e.lookupEnv == nil {
		e.lookupEnv = os.LookupEnv
	}
	if len(args) == 0 {
		usage(e.stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			for _, c := range commands {
				if c.name == rest[0] {
					return c.run(e, []string{"--help"})
				}
			}
			fmt.Fprintf(e.stderr, "smtpout: unknown command %q\n", rest[0])
			return exitUsage
		}
		usage(e.stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(e, rest)
		}
	}
	fmt.Fprintf(e.stderr, "smtpout: unknown command %q\n\n", name)
	usage(e.stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `smtpout: tools for the Fluent Bit smtp output plugin

Usage:
  smtpout COMMAND [options]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-7s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `  help    this text; "smtpout help COMMAND" or "smtpout COMMAND --help" for a command

Exit codes: 0 success, 1 a problem was found, 2 bad command line.
`)
}

// newFlagSet returns a FlagSet for a subcommand whose --help prints synopsis, description
// and options to stdout.
func newFlagSet(e *env, name, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: smtpout %s %s\n\n%s\n\nOptions:\n", name, synopsis, strings.TrimSpace(description))
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; it returns done=true with the exit code when the command must stop
// (--help: 0, printed to stdout; a bad flag: 2).
func parseFlags(e *env, fs *flag.FlagSet, args []string) (code int, done bool) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(e.stdout)
			fs.Usage()
			return exitOK, true
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, true
		}
		return exitUsage, true
	}
	return 0, false
}

// usageError prints a command-line problem and returns exitUsage.
func usageError(e *env, cmd, format string, args ...any) int {
	fmt.Fprintf(e.stderr, "smtpout %s: %s\n", cmd, fmt.Sprintf(format, args...))
	fmt.Fprintf(e.stderr, "Run \"smtpout %s --help\" for usage.\n", cmd)
	return exitUsage
}
