package main

/*
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>

// Fluent Bit tells a Go plugin nothing while a flush runs, and joins its output threads
// before it calls FLBPluginExitCtx: the only sign of a shutdown a flush can see is the
// SIGTERM itself. smtpout_on_term notes the time of the signal (async-signal-safe: a store)
// and hands the signal on to the handler that was installed before, unchanged, so Fluent Bit
// shuts down exactly as it would without the plugin.
static struct sigaction smtpout_prev_term;
static volatile int64_t smtpout_term_ns;
// smtpout_term_pipe: the handler writes one byte to [1] at the first SIGTERM (write(2) is
// async-signal-safe), so Go learns of it by reading [0], without polling.
static int smtpout_term_pipe[2] = {-1, -1};

static void smtpout_on_term(int sig, siginfo_t *info, void *uctx)
{
    struct timespec ts;
    if (smtpout_term_ns == 0 && clock_gettime(CLOCK_REALTIME, &ts) == 0) {
        int saved = errno;
        smtpout_term_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        if (smtpout_term_pipe[1] >= 0 && write(smtpout_term_pipe[1], "T", 1) < 0) {
            // nothing to do: the time is noted, flushes still see it when they start
        }
        errno = saved;
    }
    if (smtpout_prev_term.sa_flags & SA_SIGINFO) {
        if (smtpout_prev_term.sa_sigaction != NULL) {
            smtpout_prev_term.sa_sigaction(sig, info, uctx);
        }
        return;
    }
    if (smtpout_prev_term.sa_handler == SIG_IGN) {
        return;
    }
    if (smtpout_prev_term.sa_handler == SIG_DFL) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    smtpout_prev_term.sa_handler(sig);
}

// smtpout_watch_term chains smtpout_on_term in front of the current SIGTERM handler, once:
// 1 when watching, 0 when SIGTERM is ignored (nothing to watch), -1 on error.
static int smtpout_watch_term(void)
{
    struct sigaction cur, sa;
    if (sigaction(SIGTERM, NULL, &cur) != 0) {
        return -1;
    }
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == smtpout_on_term) {
        return 1;
    }
    if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_IGN) {
        return 0;
    }
    if (pipe2(smtpout_term_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        smtpout_term_pipe[0] = smtpout_term_pipe[1] = -1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = smtpout_on_term;
    sa.sa_mask = cur.sa_mask;
    // SA_ONSTACK: the signal may land on a Go thread, which must run handlers on its
    // alternate signal stack.
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | (cur.sa_flags & SA_RESTART);
    smtpout_prev_term = cur;
    return sigaction(SIGTERM, &sa, NULL) == 0 ? 1 : -1;
}

static int64_t smtpout_term_time(void) { return smtpout_term_ns; }
static int smtpout_term_fd(void) { return smtpout_term_pipe[0]; }
*/
import "C"

import (
	"os"
	"sync"
	"time"
)

var (
	termOnce     sync.Once
	termWatching bool
	termSignal   = make(chan struct{}) // closed at the first SIGTERM
)

// watchSIGTERM chains the plugin's note-taking SIGTERM handler in front of Fluent Bit's (once
// per process) and reports whether it is in place.
func watchSIGTERM() bool {
	termOnce.Do(func() {
		termWatching = C.smtpout_watch_term() == 1
		if fd := int(C.smtpout_term_fd()); termWatching && fd >= 0 {
			// A non-blocking pipe: the read parks in Go's netpoller, not on a thread.
			r := os.NewFile(uintptr(fd), "smtpout-sigterm")
			go func() {
				var b [1]byte
				if n, _ := r.Read(b[:]); n == 1 {
					close(termSignal)
				}
			}()
		}
	})
	return termWatching
}

// sigtermSignal is closed when the process gets SIGTERM (never, unless watchSIGTERM is true).
func sigtermSignal() <-chan struct{} { return termSignal }

// sigtermAt returns when the process got SIGTERM, or the zero time.
func sigtermAt() time.Time {
	ns := int64(C.smtpout_term_time())
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
