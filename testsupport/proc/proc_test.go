package proc

import (
	"crypto/sha256"
	"os"
	"testing"
	"time"
)

// CPU of this process grows by about the CPU time spent between two readings.
func TestCPUCountsWork(t *testing.T) {
	before, err := CPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(nil)
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		sum = sha256.Sum256(sum[:])
	}
	after, err := CPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// 300 ms of wall time spinning: at least a few ticks of CPU, even on a loaded machine.
	if after-before < 20*time.Millisecond {
		t.Errorf("CPU grew by %v over 300 ms of spinning, want at least 20ms", after-before)
	}
	if _, err := CPU(-1); err == nil {
		t.Error("CPU of pid -1: no error")
	}
}
