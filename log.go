package main

/*
#include <stdlib.h>
#include "flbapi.h"

// smtpout_log_check: -1 when the host offers no logger, else whether output_log_check lets a
// message at level through for this instance (its log_level).
static int smtpout_log_check(struct smtpout_flb_api *api, void *o_ins, int level)
{
    if (api == NULL || api->log_print == NULL) {
        return -1;
    }
    if (api->output_log_check == NULL || o_ins == NULL) {
        return 1;
    }
    return api->output_log_check(o_ins, level) ? 1 : 0;
}

// smtpout_log_print: log_print is variadic, which Go cannot call directly.
static void smtpout_log_print(struct smtpout_flb_api *api, int level, const char *msg)
{
    api->log_print(level, NULL, 0, "%s", msg);
}
*/
import "C"

import (
	"os"
	"unsafe"

	"github.com/smtpout/smtpout/internal/pipeline"
)

// flbLogger writes one instance's lines through Fluent Bit's own logger (api->log_print,
// filtered by api->output_log_check so the output's log_level applies), or to stderr in the
// same format when the host offers no logger.
type flbLogger struct {
	api      *C.struct_smtpout_flb_api
	ins      unsafe.Pointer // the instance's o_ins, kept from FLBPluginInit
	prefix   string
	fallback *pipeline.StderrLogger
}

func newLogger(api *C.struct_smtpout_flb_api, ins unsafe.Pointer, name string) *flbLogger {
	return &flbLogger{
		api:      api,
		ins:      ins,
		prefix:   pipeline.Prefix(name),
		fallback: stderrLogger(name),
	}
}

// stderrLogger is the logger of a host without log_print, at Fluent Bit's default level.
func stderrLogger(name string) *pipeline.StderrLogger {
	return &pipeline.StderrLogger{W: os.Stderr, Name: name, Max: pipeline.LevelInfo}
}

// Enabled implements pipeline.Logger.
func (l *flbLogger) Enabled(level pipeline.Level) bool {
	switch C.smtpout_log_check(l.api, l.ins, C.int(level)) {
	case -1:
		return l.fallback.Enabled(level)
	case 0:
		return false
	}
	return true
}

// Log implements pipeline.Logger.
func (l *flbLogger) Log(level pipeline.Level, msg string) {
	switch C.smtpout_log_check(l.api, l.ins, C.int(level)) {
	case -1:
		l.fallback.Log(level, msg)
		return
	case 0:
		return
	}
	cs := C.CString(l.prefix + pipeline.OneLine(msg))
	defer C.free(unsafe.Pointer(cs))
	C.smtpout_log_print(l.api, C.int(level), cs)
}
