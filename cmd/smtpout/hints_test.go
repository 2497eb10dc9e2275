package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/smtpout/smtpout/config"
)

// TestCoreKeyHintsNameOurKeys: the key check suggests instead of a Fluent Bit core key is a
// key the plugin reads, so renaming a key cannot leave check pointing at nothing.
func TestCoreKeyHintsNameOurKeys(t *testing.T) {
	for core, hint := range coreKeyHints {
		if k := strings.Fields(hint)[0]; !slices.Contains(config.Keys, k) {
			t.Errorf("check's hint for core key %s names %q, which is not in config.Keys", core, k)
		}
	}
}
