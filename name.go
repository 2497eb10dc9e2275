package main

/*
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

// Fluent Bit's own name for an output instance: its Alias when set, else "<plugin>.<id>" with
// the id counted over every output of the configuration (src/flb_output.c, exported by the
// fluent-bit binary of 4.x and 5.x). NULL when the host does not export it (a test host) or
// gives no instance.
typedef const char *(*smtpout_output_name_fn)(void *ins);

static const char *smtpout_output_name(void *o_ins)
{
    smtpout_output_name_fn fn;

    if (o_ins == NULL) {
        return NULL;
    }
    fn = (smtpout_output_name_fn) dlsym(RTLD_DEFAULT, "flb_output_name");
    if (fn == NULL) {
        return NULL;
    }
    return fn(o_ins);
}
*/
import "C"

import (
	"fmt"
	"sync/atomic"
	"unicode"
	"unsafe"
)

// maxInstanceName bounds the name we accept from the host; Fluent Bit's own names are short
// ("smtp.12") and an Alias is one word.
const maxInstanceName = 256

// fallbackCount numbers the instances of a host that does not name them (the test host):
// smtp.0, smtp.1, ... in the order Init is called.
var fallbackCount atomic.Int64

// instanceName returns the name Fluent Bit shows for the output instance o_ins, in its log
// lines and in the name label of its fluentbit_output_* metrics: the Alias when set, else
// smtp.N with N counted over every output. A host that cannot say (no flb_output_name, or a
// name that is empty, too long or not printable) gets smtp.N counted over this plugin's own
// instances instead.
func instanceName(oIns unsafe.Pointer) string {
	if cs := C.smtpout_output_name(oIns); cs != nil {
		if name := C.GoStringN(cs, C.int(cStrLen(cs, maxInstanceName+1))); validInstanceName(name) {
			return name
		}
	}
	return fmt.Sprintf("%s.%d", pluginName, fallbackCount.Add(1)-1)
}

// cStrLen is strnlen: the length of the C string s, at most max.
func cStrLen(s *C.char, max int) int {
	p := unsafe.Slice((*byte)(unsafe.Pointer(s)), max)
	for i, b := range p {
		if b == 0 {
			return i
		}
	}
	return max
}

// validInstanceName reports whether name can stand in a log prefix and a metric label.
func validInstanceName(name string) bool {
	if name == "" || len(name) > maxInstanceName {
		return false
	}
	for _, r := range name {
		if !unicode.IsPrint(r) || r == ']' {
			return false
		}
	}
	return true
}
