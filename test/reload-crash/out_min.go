// Command out_min is the smallest Go output plugin: it registers as "gomin", its Init
// succeeds and its flush returns OK. Built with -buildmode=c-shared, it is enough to crash
// Fluent Bit 4.2.8 and 5.1.1 on the second hot reload when the output has Workers >= 1.
package main

import (
	"C"
	"unsafe"

	"github.com/fluent/fluent-bit-go/output"
)

// FLBPluginRegister registers the output "gomin".
//
//export FLBPluginRegister
func FLBPluginRegister(def unsafe.Pointer) int {
	return output.FLBPluginRegister(def, "gomin", "minimal Go output: every flush returns OK")
}

// FLBPluginInit accepts every instance.
//
//export FLBPluginInit
func FLBPluginInit(plugin unsafe.Pointer) int {
	return output.FLB_OK
}

// FLBPluginFlushCtx accepts every chunk.
//
//export FLBPluginFlushCtx
func FLBPluginFlushCtx(ctx, data unsafe.Pointer, length C.int, tag *C.char) int {
	return output.FLB_OK
}

// FLBPluginExitCtx stops an instance.
//
//export FLBPluginExitCtx
func FLBPluginExitCtx(ctx unsafe.Pointer) int {
	return output.FLB_OK
}

func main() {}
