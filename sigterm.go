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
// before it calls FLBPluginExitCtx: the only sign of a shutdown a flush can see is the stop
// signal itself. Fluent Bit stops gracefully on SIGTERM, SIGINT and SIGQUIT, and its handler
// for SIGHUP (hot reload, also what POST /api/v2/reload sends) and SIGCONT (dump) calls
// flb_signal_init() again, which installs Fluent Bit's own handlers over every one of these.
//
// So the plugin chains smtpout_on_signal in front of the handler already installed for all
// five. For a stop signal it notes the time and the signal (async-signal-safe stores) and
// writes a byte to a pipe; for every signal it then calls the previous handler, unchanged,
// so Fluent Bit behaves exactly as it would without the plugin; and once that handler
// returns, it chains itself again wherever the handler re-installed Fluent Bit's own
// (smtpout_arm: only sigaction(2), which is async-signal-safe). FLBPluginInit arms too.

enum { SMTPOUT_NSIG = 5 };
static const int smtpout_sigs[SMTPOUT_NSIG] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGCONT};
// smtpout_is_stop: the first three stop Fluent Bit; the other two only re-install handlers.
static int smtpout_is_stop(int i) { return i < 3; }

// The handler chained behind ours, per signal, double-buffered: smtpout_arm writes the slot
// not in use and then publishes it, so a handler running on another thread never reads a
// half-written struct.
static struct sigaction smtpout_prev[SMTPOUT_NSIG][2];
static volatile int smtpout_prev_slot[SMTPOUT_NSIG];

static volatile int64_t smtpout_stop_ns;
// smtpout_stop_pipe: the handler writes one byte to [1] at the first stop signal (write(2) is
// async-signal-safe), so Go learns of it by reading [0], without polling.
static int smtpout_stop_pipe[2] = {-1, -1};

// smtpout_arm_busy / smtpout_arm_wanted: one arming at a time without a lock a signal handler
// could deadlock on: whoever finds it busy leaves a request that the holder serves.
static volatile int smtpout_arm_busy;
static volatile int smtpout_arm_wanted;

static void smtpout_on_signal(int sig, siginfo_t *info, void *uctx);

static int smtpout_index(int sig)
{
    for (int i = 0; i < SMTPOUT_NSIG; i++) {
        if (smtpout_sigs[i] == sig) {
            return i;
        }
    }
    return -1;
}

static int smtpout_is_ours(const struct sigaction *sa)
{
    return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == smtpout_on_signal;
}

// smtpout_arm_one chains smtpout_on_signal in front of signal i's current handler, unless it
// is there already, the signal is ignored, or (SIGHUP, SIGCONT) nothing but the default is
// installed, which re-installs nothing. It returns 1 when ours is in front.
static int smtpout_arm_one(int i)
{
    struct sigaction cur, sa;
    int sig = smtpout_sigs[i];
    if (sigaction(sig, NULL, &cur) != 0) {
        return 0;
    }
    if (smtpout_is_ours(&cur)) {
        return 1;
    }
    if (!(cur.sa_flags & SA_SIGINFO)) {
        if (cur.sa_handler == SIG_IGN) {
            return 0;
        }
        if (cur.sa_handler == SIG_DFL && !smtpout_is_stop(i)) {
            return 0;
        }
    }
    int next = 1 - smtpout_prev_slot[i];
    smtpout_prev[i][next] = cur;
    __atomic_store_n(&smtpout_prev_slot[i], next, __ATOMIC_RELEASE);
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = smtpout_on_signal;
    sa.sa_mask = cur.sa_mask;
    // Ours runs with the other four held back on this thread, so it never nests in itself.
    for (int j = 0; j < SMTPOUT_NSIG; j++) {
        sigaddset(&sa.sa_mask, smtpout_sigs[j]);
    }
    // SA_ONSTACK: the signal may land on a Go thread, which must run handlers on its
    // alternate signal stack.
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | (cur.sa_flags & SA_RESTART);
    if (sigaction(sig, &sa, NULL) != 0) {
        return 0;
    }
    return 1;
}

// smtpout_arm chains the handler wherever it is missing (async-signal-safe). It returns 1
// when SIGTERM is watched, the signal every service manager sends.
static int smtpout_arm(void)
{
    int term = 0;
    __atomic_store_n(&smtpout_arm_wanted, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&smtpout_arm_wanted, __ATOMIC_SEQ_CST)) {
        if (__atomic_exchange_n(&smtpout_arm_busy, 1, __ATOMIC_ACQUIRE)) {
            break; // the holder sees the request and arms again
        }
        __atomic_store_n(&smtpout_arm_wanted, 0, __ATOMIC_SEQ_CST);
        for (int i = 0; i < SMTPOUT_NSIG; i++) {
            int ok = smtpout_arm_one(i);
            if (smtpout_sigs[i] == SIGTERM) {
                term = ok;
            }
        }
        __atomic_store_n(&smtpout_arm_busy, 0, __ATOMIC_RELEASE);
    }
    if (!term) {
        struct sigaction cur;
        term = sigaction(SIGTERM, NULL, &cur) == 0 && smtpout_is_ours(&cur);
    }
    return term;
}

static void smtpout_on_signal(int sig, siginfo_t *info, void *uctx)
{
    int saved = errno;
    int i = smtpout_index(sig);
    if (i < 0) {
        errno = saved;
        return;
    }
    if (smtpout_is_stop(i)) {
        struct timespec ts;
        int64_t zero = 0;
        if (clock_gettime(CLOCK_REALTIME, &ts) == 0 &&
            __atomic_compare_exchange_n(&smtpout_stop_ns, &zero,
                                        (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            if (smtpout_stop_pipe[1] >= 0 && write(smtpout_stop_pipe[1], "T", 1) < 0) {
                // nothing to do: the time is noted, flushes still see it when they start
            }
        }
    }
    errno = saved;

    struct sigaction prev = smtpout_prev[i][__atomic_load_n(&smtpout_prev_slot[i], __ATOMIC_ACQUIRE)];
    if (prev.sa_flags & SA_SIGINFO) {
        if (prev.sa_sigaction != NULL) {
            prev.sa_sigaction(sig, info, uctx);
        }
    } else if (prev.sa_handler == SIG_DFL) {
        // Held back until we return (sa_mask); the default action then runs. No arming
        // here: it would put us back in front of the default and catch the signal again.
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    } else if (prev.sa_handler != SIG_IGN) {
        prev.sa_handler(sig);
    }

    saved = errno;
    smtpout_arm();
    errno = saved;
}

// smtpout_watch arms the handler and, the first time, opens the pipe: 1 when SIGTERM is
// watched, 0 when not.
static int smtpout_watch(void)
{
    if (smtpout_stop_pipe[0] < 0 && pipe2(smtpout_stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        smtpout_stop_pipe[0] = smtpout_stop_pipe[1] = -1;
    }
    return smtpout_arm();
}

// smtpout_stop_addr is where the handler notes the time: Go reads it there with an atomic load
// (stopSignalAt), never through a cgo call.
static int64_t *smtpout_stop_addr(void) { return (int64_t *)&smtpout_stop_ns; }
static int smtpout_stop_fd(void) { return smtpout_stop_pipe[0]; }
*/
import "C"

import (
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

var (
	stopMu       sync.Mutex
	stopReader   bool                  // the goroutine reading the pipe runs
	stopSignal   = make(chan struct{}) // closed at the first stop signal
	stopWatching bool
)

// watchStopSignals chains the plugin's note-taking handler in front of Fluent Bit's for
// SIGTERM, SIGINT and SIGQUIT (and for SIGHUP and SIGCONT, whose handler re-installs Fluent
// Bit's own). FLBPluginInit calls it for every instance, so an instance started by a hot
// reload chains again if anything replaced the handler; it never chains twice to itself.
// It reports whether SIGTERM is watched.
func watchStopSignals() bool {
	stopMu.Lock()
	defer stopMu.Unlock()
	stopWatching = C.smtpout_watch() == 1
	if fd := int(C.smtpout_stop_fd()); !stopReader && fd >= 0 {
		stopReader = true
		// A non-blocking pipe: the read parks in Go's netpoller, not on a thread.
		r := os.NewFile(uintptr(fd), "smtpout-stop-signal")
		go func() {
			var b [1]byte
			if n, _ := r.Read(b[:]); n == 1 {
				close(stopSignal)
			}
		}()
	}
	return stopWatching
}

// stopSignalled is closed when the process gets its first stop signal.
func stopSignalled() <-chan struct{} { return stopSignal }

// stopNs points at the C handler's note of the first stop signal (nanoseconds, 0 before).
var stopNs = (*int64)(unsafe.Pointer(C.smtpout_stop_addr()))

// stopSignalAt returns when the process got its first stop signal, or the zero time. The
// mailer asks it before every email it starts, so it reads the handler's note with an atomic
// load: a cgo call there cost about 5 µs per email in Fluent Bit (the call enters the
// scheduler's system-call state, which woke the runtime's sysmon thread each time).
func stopSignalAt() time.Time {
	ns := atomic.LoadInt64(stopNs)
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
