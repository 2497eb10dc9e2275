package e2e

import (
	"debug/elf"
	"slices"
	"strings"
	"testing"
)

// TestSharedObjectExports checks the built smtpout.so the way a dynamic loader sees it: it
// exports every hook Fluent Bit's Go proxy looks up, and needs nothing beyond the C library
// (so it loads into the distroless fluent/fluent-bit image).
func TestSharedObjectExports(t *testing.T) {
	so, _ := artifacts(t)
	f, err := elf.Open(so)
	if err != nil {
		t.Fatalf("open %s: %v", so, err)
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatalf("dynamic symbols: %v", err)
	}
	exported := map[string]bool{}
	for _, s := range syms {
		if s.Section != elf.SHN_UNDEF && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			exported[s.Name] = true
		}
	}
	for _, name := range []string{"FLBPluginRegister", "FLBPluginInit", "FLBPluginFlushCtx", "FLBPluginExitCtx", "FLBPluginUnregister"} {
		if !exported[name] {
			t.Errorf("%s is not exported by smtpout.so", name)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatalf("imported libraries: %v", err)
	}
	for _, lib := range libs {
		if !slices.ContainsFunc([]string{"libc.so", "libdl.so", "libpthread.so", "libm.so"}, func(p string) bool { return strings.HasPrefix(lib, p) }) {
			t.Errorf("smtpout.so needs %s; the fluent/fluent-bit image has only glibc", lib)
		}
	}
}
