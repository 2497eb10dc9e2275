package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shippedConfigs are the Fluent Bit configurations this repository ships, with the
// environment each expects (as docker-compose.yml and demo/run.sh set it).
func shippedConfigs(t *testing.T) map[string][]string {
	root := moduleRoot(t)
	return map[string][]string{
		filepath.Join(root, "fluent-bit.conf.example"): {"SMTP_PASSWORD=example-password", "SMTPOUT_SECRET_KEY=example-secret"},
		filepath.Join(root, "demo", "fluent-bit.conf"): {"DEMO_DIR=" + filepath.Join(root, "demo"), "SMTP_HOST=localhost:1465"},
	}
}

// TestFluentBitShippedConfigsDryRun: every configuration we ship is accepted by
// `fluent-bit --dry-run` from the checkout, with smtpout.so loaded (5.x refuses a missing
// Parsers_File where 4.2 only logs it, so no [error] line is allowed either).
func TestFluentBitShippedConfigsDryRun(t *testing.T) {
	bin := fluentBit(t)
	so, _ := artifacts(t)
	for conf, env := range shippedConfigs(t) {
		t.Run(filepath.Base(filepath.Dir(conf))+"/"+filepath.Base(conf), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-e", so, "-c", conf, "--dry-run")
			cmd.Dir = t.TempDir() // nothing may depend on the working directory
			cmd.Env = append(os.Environ(), env...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("fluent-bit --dry-run -c %s: %v\n%s", conf, err, out)
			}
			if !strings.Contains(string(out), "configuration test is successful") {
				t.Errorf("fluent-bit --dry-run -c %s did not say the test succeeded:\n%s", conf, out)
			}
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, "[error]") || strings.Contains(line, "[ warn]") {
					t.Errorf("fluent-bit --dry-run -c %s: %s", conf, line)
				}
			}
		})
	}
}
