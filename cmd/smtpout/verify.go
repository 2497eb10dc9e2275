package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/output"
)

const verifyDescription = `
Verifies the X-Smtpout-Signature header of emails sent by the plugin: it takes the message's
text/plain part (the JSON payload), undoes its transfer encoding, computes HMAC-SHA256 with
the shared secret and compares it with the header in constant time. Each FILE is one message
as saved by a mail client (.eml, RFC 5322); with no FILE, or FILE "-", one message is read
from standard input. Prints "FILE: ok" or "FILE: FAILED: reason" per message.

A digest (header X-Smtpout-Records) is checked over its application/x-ndjson part: the
signature, the count, and each line a JSON object. It prints "FILE: digest of N records:
signature OK" and, per line, the X-Smtpout-Signature that record's own email carried, so a
line can be matched to a single email (search the mailbox for that header value).

The secret comes from exactly one of --secret-file (surrounding white space, such as the
final newline, is ignored, as Fluent Bit ignores it around secret_key), --secret-env, or the
secret_key (or secret_key_file) of an output in a Fluent Bit configuration (-c, with
--output when there are several), trimmed the same way everywhere. The secret is never printed.

Exit status: 0 when every message verifies, 1 when any does not (or cannot be read), 2 on a
bad command line.`

func runVerify(e *env, args []string) int {
	fs := newFlagSet(e, "verify", "(--secret-file F | --secret-env NAME | -c FILE [--output NAME]) [FILE.eml ...]", verifyDescription)
	secretFile := fs.String("secret-file", "", "read the shared secret from `file`")
	secretEnv := fs.String("secret-env", "", "read the shared secret from environment variable `name`")
	conf := fs.String("c", "", "take secret_key from an smtp output of this Fluent Bit configuration `file`")
	fs.StringVar(conf, "config", "", "same as -c")
	sel := fs.String("output", "", "with -c: the output's alias, instance name (smtp.N) or index among smtp outputs")
	if code, done := parseFlags(e, fs, args); done {
		return code
	}
	secret, code := readSecret(e, *secretFile, *secretEnv, *conf, *sel)
	if code != exitOK {
		return code
	}
	files := fs.Args()
	if len(files) == 0 {
		files = []string{"-"}
	}
	failed := 0
	for _, f := range files {
		name, v, err := f, (*output.Verification)(nil), error(nil)
		if f == "-" {
			name = "(stdin)"
			v, err = output.VerifyEmail(e.stdin, secret)
		} else if fh, oerr := os.Open(f); oerr != nil {
			fmt.Fprintf(e.stdout, "%s: FAILED: cannot read: %v\n", name, unwrapPath(oerr))
			failed++
			continue
		} else {
			v, err = output.VerifyEmail(fh, secret)
			fh.Close()
		}
		if err != nil {
			fmt.Fprintf(e.stdout, "%s: FAILED: %s\n", name, strings.TrimPrefix(err.Error(), "verify: "))
			failed++
			continue
		}
		if !v.Digest {
			fmt.Fprintf(e.stdout, "%s: ok\n", name)
			continue
		}
		printDigest(e, name, v)
	}
	if failed > 0 {
		if len(files) > 1 {
			fmt.Fprintf(e.stdout, "%d of %d message(s) FAILED\n", failed, len(files))
		}
		return exitFail
	}
	return exitOK
}

// printDigest prints a verified digest: its count, then per line the signature the record's
// single email carried, to find that email (or show that none was sent).
func printDigest(e *env, name string, v *output.Verification) {
	records := "records"
	if len(v.Lines) == 1 {
		records = "record"
	}
	fmt.Fprintf(e.stdout, "%s: digest of %d %s: signature OK\n", name, len(v.Lines), records)
	for i, l := range v.Lines {
		fmt.Fprintf(e.stdout, "  line %d: single email %s: %s\n", i+1, output.SignatureHeader, l.Signature)
	}
}

// readSecret returns the shared secret from the one source given. The value is never
// printed, not even in errors.
func readSecret(e *env, file, envName, conf, sel string) ([]byte, int) {
	n := 0
	for _, s := range []string{file, envName, conf} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, usageError(e, "verify", "give exactly one of --secret-file, --secret-env or -c")
	}
	var secret string
	switch {
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			fmt.Fprintf(e.stderr, "smtpout verify: --secret-file: %v\n", err)
			return nil, exitFail
		}
		secret = config.TrimSecret(string(data))
	case envName != "":
		v, ok := e.lookupEnv(envName)
		if !ok {
			fmt.Fprintf(e.stderr, "smtpout verify: --secret-env: environment variable %s is not set\n", envName)
			return nil, exitFail
		}
		secret = config.TrimSecret(v)
	default:
		o, err := pickOutput(e, conf, sel)
		if err != nil {
			fmt.Fprintf(e.stderr, "smtpout verify: %v\n", err)
			return nil, exitFail
		}
		s, err := config.SecretKey(config.MapGetter(o.Keys))
		if err != nil {
			fmt.Fprintf(e.stderr, "smtpout verify: %s: output %s: %v\n", o.Pos, o.Label(), err)
			return nil, exitFail
		}
		secret = s.Reveal()
		if secret == "" {
			fmt.Fprintf(e.stderr, "smtpout verify: %s: output %s has no secret_key\n", o.Pos, o.Label())
			return nil, exitFail
		}
	}
	if secret == "" {
		fmt.Fprintln(e.stderr, "smtpout verify: the secret is empty")
		return nil, exitFail
	}
	return []byte(secret), exitOK
}

// unwrapPath drops the path from an *os.PathError, which the caller already printed.
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
