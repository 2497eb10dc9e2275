package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// withHosts returns cmd run with hosts as its /etc/hosts: unshare gives it a private mount
// namespace, a bind mount puts the file over /etc/hosts there, and exec leaves the same
// process (the PID signals go to) running cmd. Nothing outside that namespace sees the file.
// The test is skipped where that cannot be done (not root, no unshare).
func withHosts(t *testing.T, dir, hosts string, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	path := filepath.Join(dir, "hosts")
	if err := os.WriteFile(path, []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	const script = `mount --bind "$0" /etc/hosts && exec "$@"`
	probe := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, path, "true")
	if out, err := probe.CombinedOutput(); err != nil {
		t.Skipf("skipped: cannot give fluent-bit its own /etc/hosts (needs root and unshare): %v %s", err, out)
	}
	args := append([]string{"--mount", "--propagation", "private", "sh", "-c", script, path}, cmd.Args...)
	wrapped := exec.Command("unshare", args...)
	wrapped.Env = cmd.Env
	return wrapped
}
