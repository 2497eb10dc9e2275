// Command smtpout is a Fluent Bit output plugin (built with -buildmode=c-shared into
// smtpout.so) that delivers every record as one signed email over SMTP. This file only
// adapts Fluent Bit's C calls to internal/pipeline, which does the work.
package main

/*
#include <stdlib.h>
#include "flbapi.h"
*/
import "C"

import (
	"fmt"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"unsafe"

	flb "github.com/fluent/fluent-bit-go/output"

	"github.com/smtpout/smtpout/config"
	"github.com/smtpout/smtpout/internal/pipeline"
)

// pluginName is the name used in [OUTPUT] Name; description is what fluent-bit -h shows.
const (
	pluginName  = "smtp"
	description = "Deliver every record as one signed email over SMTP"
)

// instance is what FLBPluginSetContext stores for one [OUTPUT] section.
type instance struct {
	run     *pipeline.Instance
	log     pipeline.Logger
	metrics *cmtMetrics // nil when the host offers no cmetrics
}

// initGetter reads configuration keys through Fluent Bit during FLBPluginInit only: the
// plugin pointer is shared by every instance and points at another instance's keys once
// Init returns, so values are cached and the pointer is dropped when Init ends.
type initGetter struct {
	plugin unsafe.Pointer
	values map[string]string
}

// Get implements config.Getter.
func (g *initGetter) Get(key string) string {
	key = strings.ToLower(key)
	if v, ok := g.values[key]; ok {
		return v
	}
	if g.plugin == nil {
		return ""
	}
	v := flb.FLBPluginConfigKey(g.plugin, key)
	g.values[key] = v
	return v
}

// FLBPluginRegister registers the plugin as the log output "smtp". Fluent Bit calls it once
// per process.
//
//export FLBPluginRegister
func FLBPluginRegister(def unsafe.Pointer) (rc C.int) {
	defer func() {
		if p := recover(); p != nil {
			stderrLogger(pluginName).Log(pipeline.LevelError, fmt.Sprintf("register: internal error: %v", p))
			rc = flb.FLB_ERROR
		}
	}()
	return C.int(flb.FLBPluginRegisterWithEventType(def, flb.FLB_OUTPUT_LOGS, pluginName, description))
}

// FLBPluginInit starts one [OUTPUT] instance. It reads every key now, logs each problem and
// returns FLB_ERROR (Fluent Bit then refuses to start), or stores the instance and returns
// FLB_OK. It never dials.
//
//export FLBPluginInit
func FLBPluginInit(plugin unsafe.Pointer) (rc C.int) {
	var log pipeline.Logger = stderrLogger(pluginName)
	defer func() {
		if p := recover(); p != nil {
			log.Log(pipeline.LevelError, fmt.Sprintf("not started: internal error: %v", p))
			if log.Enabled(pipeline.LevelDebug) {
				log.Log(pipeline.LevelDebug, string(debug.Stack()))
			}
			rc = flb.FLB_ERROR
		}
	}()
	if plugin == nil {
		log.Log(pipeline.LevelError, "not started: Fluent Bit passed no plugin context")
		return flb.FLB_ERROR
	}
	p := (*C.struct_smtpout_flbgo_output_plugin)(plugin)
	name := instanceName(p.o_ins)
	log = newLogger(p.api, p.o_ins, name)

	g := &initGetter{plugin: plugin, values: make(map[string]string)}
	for _, k := range config.Keys {
		g.Get(k)
	}
	opt := pipeline.Options{}
	// sigterm.go: once Fluent Bit gets SIGTERM, SIGINT or SIGQUIT, flushes end within
	// flush_timeout. Armed again at every Init: a hot reload re-installs Fluent Bit's handlers.
	if watchStopSignals() {
		opt.StopSignalled, opt.Stopping = stopSignalAt, stopSignalled()
	}
	// Digests go out between flushes: their counters are recorded when they are delivered.
	var self atomic.Pointer[instance]
	opt.OnDigests = func() {
		if i := self.Load(); i != nil {
			i.metrics.record(pipeline.Stats{}, totalsOf(i.run))
		}
	}
	run := pipeline.Open(g, log, opt)
	g.plugin = nil
	if run == nil {
		return flb.FLB_ERROR
	}
	m := openMetrics(p.api, p.o_ins, name, log)
	inst := &instance{run: run, log: log, metrics: m}
	self.Store(inst)
	flb.FLBPluginSetContext(plugin, inst)
	return flb.FLB_OK
}

// FLBPluginFlushCtx delivers one chunk of records for tag: FLB_OK, or FLB_RETRY when any
// record needs another try (records already delivered are skipped next time).
//
//export FLBPluginFlushCtx
func FLBPluginFlushCtx(ctx, data unsafe.Pointer, length C.size_t, tag *C.char) (rc C.int) {
	t := C.GoString(tag)
	in, ok := flb.FLBPluginGetContext(ctx).(*instance)
	if !ok || in == nil {
		stderrLogger(pluginName).Log(pipeline.LevelError, fmt.Sprintf(
			"dropping a chunk of %d bytes for tag %q: flush with an unknown plugin context", length, t))
		return flb.FLB_ERROR
	}
	defer func() {
		if p := recover(); p != nil {
			in.log.Log(pipeline.LevelError, fmt.Sprintf(
				"dropping a chunk of %d bytes for tag %q: internal error: %v", length, t, p))
			if in.log.Enabled(pipeline.LevelDebug) {
				in.log.Log(pipeline.LevelDebug, string(debug.Stack()))
			}
			rc = flb.FLB_ERROR
		}
	}()
	// No copy: Fluent Bit keeps the chunk valid and unchanged until this call returns, and
	// Flush keeps nothing that aliases it once it returns (see pipeline.Instance.Flush). A
	// copy cost a fresh chunk-sized allocation per flush, page faults included: about 5 µs
	// of CPU per 2 KB record in the real host.
	var buf []byte
	if length > 0 && data != nil {
		buf = unsafe.Slice((*byte)(data), int(length))
	}
	code, st := in.run.Flush(t, buf)
	in.metrics.record(st, totalsOf(in.run))
	return C.int(code)
}

// FLBPluginExitCtx stops one instance: its SMTP connections are closed with QUIT.
//
//export FLBPluginExitCtx
func FLBPluginExitCtx(ctx unsafe.Pointer) (rc C.int) {
	in, ok := flb.FLBPluginGetContext(ctx).(*instance)
	if !ok || in == nil {
		return flb.FLB_OK
	}
	defer func() {
		if p := recover(); p != nil {
			in.log.Log(pipeline.LevelError, fmt.Sprintf("stop: internal error: %v", p))
			rc = flb.FLB_ERROR
		}
	}()
	_ = in.run.Close() // Close logs its own problems
	in.metrics.close()
	return flb.FLB_OK
}

// FLBPluginUnregister releases what FLBPluginRegister allocated. Fluent Bit calls it once,
// last.
//
//export FLBPluginUnregister
func FLBPluginUnregister(def unsafe.Pointer) {
	defer func() {
		if p := recover(); p != nil {
			stderrLogger(pluginName).Log(pipeline.LevelError, fmt.Sprintf("unregister: internal error: %v", p))
		}
	}()
	flb.FLBPluginUnregister(def)
}

// main never runs in a c-shared library.
func main() {}
