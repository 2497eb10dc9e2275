/*
 * host: a small stand-in for Fluent Bit's Go output proxy, used by the end-to-end tests.
 *
 * It loads a Go output plugin (.so) exactly as Fluent Bit v4.2.8 does in
 * src/flb_plugin_proxy.c and src/proxy/go/go.c:
 *
 *   dlopen(RTLD_LAZY) -> FLBPluginRegister(def) once -> per [OUTPUT] instance
 *   FLBPluginInit(plugin) with ONE shared struct flbgo_output_plugin whose o_ins and context
 *   are rewritten before each call -> FLBPluginFlushCtx(remote_context, data, size, tag) from
 *   any thread -> FLBPluginOutputPreExit (when exported) and FLBPluginExitCtx(remote_context)
 *   per instance (FLBPluginExit only when ExitCtx is absent) -> FLBPluginUnregister(def).
 *
 * It reads commands, one per line, from a script file or from standard input ("-"), and
 * answers each command with exactly one line on standard output, so a test can drive it
 * interactively. Plugin log lines (api->log_print) go to standard error, formatted as Fluent
 * Bit formats them. Commands:
 *
 *   load PATH               dlopen the plugin and resolve its exports   -> "load -> ok"
 *   register                FLBPluginRegister(def)                      -> "register -> RC name=.. type=.. proxy=.."
 *   set I KEY VALUE...      set a key of instance I (VALUE is the rest of the line; may be empty)
 *   loglevel I LEVEL        instance log_level: off|error|warn|info|debug|trace or 0..5
 *   init I                  FLBPluginInit for instance I                -> "init I -> RC"
 *   flush I TAG PATH        FLBPluginFlushCtx on this thread with the file's bytes -> "flush I -> RC"
 *   hold                    jobs started from now on wait at a gate...
 *   release                 ...until release opens it for all of them at once
 *   start I TAG PATH        the same flush on a new thread              -> "start J"
 *   exitasync I             FLBPluginExitCtx on a new thread            -> "start J"
 *   join J                  wait for job J                              -> "join J -> RC"
 *   joinall                 wait for every unjoined job                 -> "joinall -> J:RC J:RC ..."
 *   exit I                  FLBPluginExitCtx for instance I             -> "exit I -> RC"
 *   preexit                 FLBPluginOutputPreExit(0) when exported     -> "preexit -> ok|absent"
 *   unregister              FLBPluginUnregister(def)                    -> "unregister -> ok"
 *   echo TEXT               -> "TEXT" (a synchronisation point)
 *   cmetrics on|off         whether output_get_cmt_instance gives each instance a (fake) cmetrics
 *                           context; off by default, as for a host without metrics  -> "ok"
 *   metrics                 every series the plugin created in the cmetrics stub, in creation
 *                           order: "metrics -> NAME{name="LABEL"}=VALUE ..." (a histogram as
 *                           NAME_count and NAME_sum); " error=..." ends it if the plugin broke
 *                           the cmetrics calling convention
 *   stats                   SmtpoutRuntimeStats when exported          -> "stats -> k=v ..."|"stats -> absent"
 *   rusage                  this process's CPU time and peak RSS       -> "rusage -> utime_us=.. stime_us=.. maxrss_kb=.."
 *   fbsignals               install handlers as Fluent Bit's flb_signal_init() does (signal(2)):
 *                           SIGTERM, SIGINT, SIGQUIT note a stop; SIGHUP and SIGCONT call the
 *                           installer again, as Fluent Bit's handler does   -> "fbsignals -> ok"
 *   signal NAME             send TERM|INT|QUIT|HUP|CONT to this process and wait until the
 *                           Fluent Bit-like handler saw it -> "signal NAME -> stops=N reinstalls=N"
 *                           (how many stop signals and re-installs that handler counted in all)
 *   bench I TAG PATH F T    F flushes of the file's bytes from T threads at once, flush k with the
 *                           tag "TAG.k" (distinct Message-IDs)         -> "bench I -> flushes=F ok=.. retry=.. error=.. ns=.. utime_us=.. stime_us=.."
 *   quit                    leave (also at end of input)
 * Blank lines and lines starting with '#' are ignored and answered with nothing. An unusable
 * command is answered with "error: ..." and the host goes on.
 *
 * Build: gcc -O1 -g -Wall -rdynamic -o host host.c -ldl -lpthread
 * (-rdynamic lets the stub of cmetrics, exported from this binary, be found with
 * dlsym(RTLD_DEFAULT, ...) as the plugin would find Fluent Bit's own.)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---- Fluent Bit structures (x86-64 layouts) ---------------------------------------------- */

/* include/fluent-bit/flb_plugin_proxy.h (v4.2.8: 40 bytes, without config_map; v5.x appends
 * config_map: 48 bytes). The host hands the plugin a zeroed 48-byte definition, as v5 does. */
struct flb_plugin_proxy_def {
    int type;
    int proxy;
    int flags;
    char *name;
    char *description;
    int event_type;
    void *config_map; /* v5.x only */
};

/* include/fluent-bit/flb_plugin_proxy.h */
struct flb_plugin_proxy_context {
    void *remote_context;
    void *proxy; /* struct flb_plugin_proxy *: unused by the plugin */
};

/* include/fluent-bit/flb_api.h (custom_* appended in later releases) */
struct flb_api {
    const char *(*output_get_property)(const char *, void *);
    const char *(*input_get_property)(const char *, void *);
    void *(*output_get_cmt_instance)(void *);
    void *(*input_get_cmt_instance)(void *);
    void (*log_print)(int, const char *, int, const char *, ...);
    int (*input_log_check)(void *, int);
    int (*output_log_check)(void *, int);
    const char *(*custom_get_property)(const char *, void *);
    int (*custom_log_check)(void *, int);
};

/* src/proxy/go/go.h */
struct flbgo_output_plugin {
    char *name;
    void *api;
    void *o_ins;
    struct flb_plugin_proxy_context *context;

    int (*cb_init)(struct flbgo_output_plugin *);
    int (*cb_flush)(const void *, size_t, const char *);
    int (*cb_flush_ctx)(void *, const void *, size_t, char *);
    int (*cb_exit)(void);
    int (*cb_exit_ctx)(void *);
};

_Static_assert(sizeof(struct flb_plugin_proxy_def) == 48, "proxy def layout");
_Static_assert(sizeof(struct flb_plugin_proxy_context) == 16, "proxy context layout");
_Static_assert(sizeof(struct flb_api) == 9 * sizeof(void *), "flb_api layout");

/* include/fluent-bit/flb_log.h */
#define FLB_LOG_OFF 0
#define FLB_LOG_ERROR 1
#define FLB_LOG_WARN 2
#define FLB_LOG_INFO 3
#define FLB_LOG_DEBUG 4
#define FLB_LOG_TRACE 5

/* ---- the host's own state ------------------------------------------------------------------ */

#define MAX_INSTANCES 16
#define MAX_KEYS 64
#define MAX_JOBS 256

/* One [OUTPUT] instance: what Fluent Bit keeps in struct flb_output_instance. The plugin only
 * ever sees a pointer to it (o_ins) and hands it back to the api callbacks. */
struct instance {
    int used;
    int id;
    int nkeys;
    char *keys[MAX_KEYS];
    char *values[MAX_KEYS];
    int log_level;
    int initialised;
    struct flb_plugin_proxy_context context;
};

static struct instance instances[MAX_INSTANCES];
static struct flb_api api;
static struct flb_plugin_proxy_def def;
static struct flbgo_output_plugin plugin; /* ONE plugin struct shared by every instance */
static void *so;
static int (*fn_register)(void *);
static int (*fn_unregister)(void *);
static int (*fn_preexit)(int);
static int (*fn_stats)(char *, int); /* SmtpoutRuntimeStats: optional, not a Fluent Bit export */

static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;

/* ---- the api the plugin calls -------------------------------------------------------------- */

/* flb_output_get_property: case-insensitive lookup, NULL when the key is absent. */
static const char *host_output_get_property(const char *key, void *o_ins)
{
    struct instance *ins = o_ins;
    int i;

    if (ins == NULL || key == NULL) {
        return NULL;
    }
    for (i = 0; i < ins->nkeys; i++) {
        if (strcasecmp(ins->keys[i], key) == 0) {
            return ins->values[i];
        }
    }
    return NULL;
}

/* flb_output_log_check: the message is wanted when its level is within the instance's. */
static int host_output_log_check(void *o_ins, int level)
{
    struct instance *ins = o_ins;

    if (ins == NULL) {
        return 0;
    }
    return level <= ins->log_level;
}

/* ---- a stub of cmetrics ------------------------------------------------------------------- */

/* The functions below have the names and signatures of Fluent Bit's lib/cmetrics
 * (include/cmetrics/cmt_counter.h, cmt_histogram.h) and are exported (-rdynamic), so the plugin
 * finds them with dlsym(RTLD_DEFAULT, ...) as it finds Fluent Bit's. They record values per
 * metric and label for the "metrics" command, and note any call that breaks the convention. */

#define MAX_METRICS 128
#define MAX_SERIES 512

struct stub_metric {
    int histogram;
    void *cmt;
    char fqname[256];
    size_t nbuckets;
};

struct stub_series {
    struct stub_metric *metric;
    char label[128];
    double value; /* counter */
    double sum;   /* histogram */
    uint64_t count;
};

struct stub_buckets {
    size_t count;
    double *upper_bounds;
};

static pthread_mutex_t stub_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct stub_metric stub_metrics[MAX_METRICS];
static int stub_nmetrics;
static struct stub_series stub_series[MAX_SERIES];
static int stub_nseries;
static char stub_error[256];
static int cmetrics_on;
static char fake_cmt[MAX_INSTANCES]; /* one fake struct cmt per instance: only addresses matter */

void *cmt_counter_create(void *cmt, char *ns, char *subsystem, char *name, char *help,
                         int label_count, char **label_keys);
int cmt_counter_add(void *counter, uint64_t timestamp, double val, int labels_count,
                    char **label_vals);
void *cmt_histogram_buckets_create_size(double *bkts, size_t count);
void *cmt_histogram_create(void *cmt, char *ns, char *subsystem, char *name, char *help,
                           void *buckets, int label_count, char **label_keys);
int cmt_histogram_observe(void *histogram, uint64_t timestamp, double val, int labels_count,
                          char **label_vals);
int cmt_histogram_set_default(void *histogram, uint64_t timestamp, uint64_t *bucket_defaults,
                              double sum, uint64_t count, int labels_count, char **label_vals);

/* stub_fail notes the first broken convention (the caller holds stub_mutex). */
static void stub_fail(const char *what, const char *name)
{
    if (stub_error[0] == '\0') {
        snprintf(stub_error, sizeof(stub_error), "%s(%s)", what, name ? name : "?");
    }
}

static void *stub_create(int histogram, void *cmt, char *ns, char *subsystem, char *name,
                         char *help, size_t nbuckets, int label_count, char **label_keys)
{
    struct stub_metric *m = NULL;
    char *c = cmt;

    pthread_mutex_lock(&stub_mutex);
    if (c < fake_cmt || c >= fake_cmt + MAX_INSTANCES) {
        stub_fail("create: not a cmt from output_get_cmt_instance", name);
    }
    else if (ns == NULL || subsystem == NULL || name == NULL || help == NULL || help[0] == '\0') {
        stub_fail("create: missing namespace, subsystem, name or help", name);
    }
    else if (label_count != 1 || label_keys == NULL || strcmp(label_keys[0], "name") != 0) {
        stub_fail("create: want the one label key \"name\"", name);
    }
    else if (stub_nmetrics < MAX_METRICS) {
        m = &stub_metrics[stub_nmetrics++];
        m->histogram = histogram;
        m->cmt = cmt;
        m->nbuckets = nbuckets;
        snprintf(m->fqname, sizeof(m->fqname), "%s_%s_%s", ns, subsystem, name);
    }
    pthread_mutex_unlock(&stub_mutex);
    return m;
}

/* stub_series_of finds or creates the series of m for the label (caller holds stub_mutex). */
static struct stub_series *stub_series_of(void *metric, int histogram, uint64_t timestamp,
                                          int labels_count, char **label_vals, const char *what)
{
    struct stub_metric *m = metric;
    int i;

    if (m < stub_metrics || m >= stub_metrics + stub_nmetrics || m->histogram != histogram) {
        stub_fail(what, "not a metric the stub created");
        return NULL;
    }
    if (labels_count != 1 || label_vals == NULL || label_vals[0] == NULL) {
        stub_fail(what, m->fqname);
        return NULL;
    }
    if (timestamp < 1000000000ULL * 1000000000ULL) { /* before 2001: not nanoseconds */
        stub_fail("timestamp not in nanoseconds", m->fqname);
    }
    for (i = 0; i < stub_nseries; i++) {
        if (stub_series[i].metric == m && strcmp(stub_series[i].label, label_vals[0]) == 0) {
            return &stub_series[i];
        }
    }
    if (stub_nseries >= MAX_SERIES) {
        stub_fail("too many series", m->fqname);
        return NULL;
    }
    stub_series[stub_nseries].metric = m;
    snprintf(stub_series[stub_nseries].label, sizeof(stub_series[stub_nseries].label), "%s", label_vals[0]);
    return &stub_series[stub_nseries++];
}

void *cmt_counter_create(void *cmt, char *ns, char *subsystem, char *name, char *help,
                         int label_count, char **label_keys)
{
    return stub_create(0, cmt, ns, subsystem, name, help, 0, label_count, label_keys);
}

int cmt_counter_add(void *counter, uint64_t timestamp, double val, int labels_count,
                    char **label_vals)
{
    struct stub_series *s;

    pthread_mutex_lock(&stub_mutex);
    s = stub_series_of(counter, 0, timestamp, labels_count, label_vals, "cmt_counter_add");
    if (s != NULL && val < 0) {
        stub_fail("cmt_counter_add: negative value", s->metric->fqname);
    }
    if (s != NULL) {
        s->value += val;
    }
    pthread_mutex_unlock(&stub_mutex);
    return s != NULL ? 0 : -1;
}

void *cmt_histogram_buckets_create_size(double *bkts, size_t count)
{
    struct stub_buckets *b;
    size_t i;

    if (bkts == NULL || count < 1) {
        return NULL;
    }
    b = calloc(1, sizeof(*b));
    b->count = count;
    b->upper_bounds = calloc(count, sizeof(double));
    for (i = 0; i < count; i++) {
        b->upper_bounds[i] = bkts[i]; /* copied, as cmetrics does */
        if (i > 0 && bkts[i] <= bkts[i - 1]) {
            pthread_mutex_lock(&stub_mutex);
            stub_fail("buckets not increasing", "cmt_histogram_buckets_create_size");
            pthread_mutex_unlock(&stub_mutex);
        }
    }
    return b;
}

void *cmt_histogram_create(void *cmt, char *ns, char *subsystem, char *name, char *help,
                           void *buckets, int label_count, char **label_keys)
{
    struct stub_buckets *b = buckets;

    if (b == NULL) {
        return NULL;
    }
    /* The histogram owns its buckets (the stub only keeps their number). */
    return stub_create(1, cmt, ns, subsystem, name, help, b->count, label_count, label_keys);
}

int cmt_histogram_observe(void *histogram, uint64_t timestamp, double val, int labels_count,
                          char **label_vals)
{
    struct stub_series *s;

    pthread_mutex_lock(&stub_mutex);
    s = stub_series_of(histogram, 1, timestamp, labels_count, label_vals, "cmt_histogram_observe");
    if (s != NULL) {
        s->sum += val;
        s->count++;
    }
    pthread_mutex_unlock(&stub_mutex);
    return s != NULL ? 0 : -1;
}

/* cmt_histogram_set_default creates (or resets) one series with the given values. */
int cmt_histogram_set_default(void *histogram, uint64_t timestamp, uint64_t *bucket_defaults,
                              double sum, uint64_t count, int labels_count, char **label_vals)
{
    struct stub_series *s;

    if (bucket_defaults == NULL) {
        stub_fail("cmt_histogram_set_default", "NULL bucket_defaults");
        return -1;
    }
    pthread_mutex_lock(&stub_mutex);
    s = stub_series_of(histogram, 1, timestamp, labels_count, label_vals, "cmt_histogram_set_default");
    if (s != NULL) {
        s->sum = sum;
        s->count = count;
    }
    pthread_mutex_unlock(&stub_mutex);
    return s != NULL ? 0 : -1;
}

/* flb_output_get_cmt_instance: the instance's cmetrics context, or NULL (metrics off) until
 * the script says "cmetrics on". */
static void *host_output_get_cmt_instance(void *o_ins)
{
    struct instance *ins = o_ins;

    if (!cmetrics_on || ins == NULL) {
        return NULL;
    }
    return &fake_cmt[ins->id];
}

/* flb_log_print: "[2026/11/27 10:00:00.123456789] [ info] message" on stderr. */
static void host_log_print(int level, const char *file, int line, const char *fmt, ...)
{
    char msg[8192];
    char stamp[64];
    const char *name;
    struct timespec ts;
    struct tm tm;
    va_list ap;

    (void) file;
    (void) line;
    switch (level) {
    case FLB_LOG_ERROR: name = "error"; break;
    case FLB_LOG_WARN: name = " warn"; break;
    case FLB_LOG_INFO: name = " info"; break;
    case FLB_LOG_DEBUG: name = "debug"; break;
    case FLB_LOG_TRACE: name = "trace"; break;
    default: name = "?????"; break;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y/%m/%d %H:%M:%S", &tm);

    pthread_mutex_lock(&log_mutex);
    fprintf(stderr, "[%s.%09ld] [%s] %s\n", stamp, ts.tv_nsec, name, msg);
    fflush(stderr);
    pthread_mutex_unlock(&log_mutex);
}

/* ---- output helpers ------------------------------------------------------------------------ */

static pthread_mutex_t out_mutex = PTHREAD_MUTEX_INITIALIZER;

static void reply(const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&out_mutex);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&out_mutex);
}

static struct instance *get_instance(const char *arg, int create)
{
    char *end;
    long id;

    errno = 0;
    id = strtol(arg, &end, 10);
    if (errno != 0 || *end != '\0' || id < 0 || id >= MAX_INSTANCES) {
        return NULL;
    }
    if (!instances[id].used) {
        if (!create) {
            return NULL;
        }
        instances[id].used = 1;
        instances[id].id = (int) id;
        instances[id].log_level = FLB_LOG_INFO;
    }
    return &instances[id];
}

static int read_file(const char *path, char **data, size_t *size)
{
    FILE *f;
    long n;
    char *buf;

    f = fopen(path, "rb");
    if (f == NULL) {
        return -1;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return -1;
    }
    /* malloc'ed exactly to size, as Fluent Bit's chunk buffer: a read past the end is a bug
     * that tools such as valgrind or ASan would show. */
    buf = malloc(n > 0 ? (size_t) n : 1);
    if (buf == NULL || (n > 0 && fread(buf, 1, (size_t) n, f) != (size_t) n)) {
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    *data = buf;
    *size = (size_t) n;
    return 0;
}

/* do_flush calls FLBPluginFlushCtx as proxy_go_output_flush does: the tag is a fresh,
 * NUL-terminated copy freed after the call, and the data is freed after the call too. Both are
 * scribbled over first: the plugin decodes the chunk in place, so anything it kept that still
 * pointed into it (a Message-ID in the ledger, say) would read garbage from then on and the
 * retry and ledger tests would see it. */
static int do_flush(struct instance *ins, const char *tag, const char *path, int *rc)
{
    char *data;
    size_t size;
    char *tagbuf;

    if (read_file(path, &data, &size) != 0) {
        return -1;
    }
    tagbuf = strdup(tag);
    if (plugin.cb_flush_ctx) {
        *rc = plugin.cb_flush_ctx(ins->context.remote_context, data, size, tagbuf);
    }
    else {
        *rc = plugin.cb_flush(data, size, tagbuf);
    }
    memset(tagbuf, 0xAA, strlen(tagbuf));
    memset(data, 0xAA, size);
    free(tagbuf);
    free(data);
    return 0;
}

static int do_exit(struct instance *ins)
{
    if (plugin.cb_exit_ctx) {
        return plugin.cb_exit_ctx(ins->context.remote_context);
    }
    if (plugin.cb_exit) {
        return plugin.cb_exit();
    }
    return 0;
}

/* ---- background jobs ----------------------------------------------------------------------- */

static pthread_mutex_t gate_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_closed;

enum job_kind { JOB_FLUSH, JOB_EXIT };

struct job {
    int used;
    int joined;
    enum job_kind kind;
    int gated;
    struct instance *ins;
    char *tag;
    char *path;
    int rc;
    int failed;
    pthread_t thread;
};

static struct job jobs[MAX_JOBS];
static int njobs;

static void *job_main(void *arg)
{
    struct job *j = arg;

    if (j->gated) {
        pthread_mutex_lock(&gate_mutex);
        while (gate_closed) {
            pthread_cond_wait(&gate_cond, &gate_mutex);
        }
        pthread_mutex_unlock(&gate_mutex);
    }
    if (j->kind == JOB_FLUSH) {
        j->failed = do_flush(j->ins, j->tag, j->path, &j->rc) != 0;
    }
    else {
        j->rc = do_exit(j->ins);
    }
    return NULL;
}

static int start_job(enum job_kind kind, struct instance *ins, const char *tag, const char *path)
{
    struct job *j;
    int id;

    /* A joined job's slot is reused, so a long run (the soak test) never runs out. */
    for (id = 0; id < njobs; id++) {
        if (!jobs[id].used || jobs[id].joined) {
            break;
        }
    }
    if (id == MAX_JOBS) {
        return -1;
    }
    j = &jobs[id];
    memset(j, 0, sizeof(*j));
    j->used = 1;
    j->kind = kind;
    j->ins = ins;
    j->tag = tag ? strdup(tag) : NULL;
    j->path = path ? strdup(path) : NULL;
    pthread_mutex_lock(&gate_mutex);
    j->gated = gate_closed;
    pthread_mutex_unlock(&gate_mutex);
    if (pthread_create(&j->thread, NULL, job_main, j) != 0) {
        free(j->tag);
        free(j->path);
        j->used = 0;
        return -1;
    }
    if (id == njobs) {
        njobs++;
    }
    return id;
}

static int join_job(int id)
{
    struct job *j = &jobs[id];

    pthread_join(j->thread, NULL);
    j->joined = 1;
    free(j->tag);
    free(j->path);
    j->tag = NULL;
    j->path = NULL;
    return j->failed ? -1 : j->rc;
}

/* ---- commands ------------------------------------------------------------------------------ */

static char *next_word(char **s)
{
    char *p = *s;
    char *w;

    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (*p == '\0') {
        *s = p;
        return NULL;
    }
    w = p;
    while (*p != '\0' && *p != ' ' && *p != '\t') {
        p++;
    }
    if (*p != '\0') {
        *p++ = '\0';
    }
    *s = p;
    return w;
}

static int parse_level(const char *s)
{
    static const char *names[] = {"off", "error", "warn", "info", "debug", "trace"};
    int i;

    for (i = 0; i < 6; i++) {
        if (strcasecmp(s, names[i]) == 0) {
            return i;
        }
    }
    if (s[0] >= '0' && s[0] <= '5' && s[1] == '\0') {
        return s[0] - '0';
    }
    return -1;
}

static void cmd_load(char *rest)
{
    char *path = next_word(&rest);

    if (path == NULL) {
        reply("error: load PATH");
        return;
    }
    so = dlopen(path, RTLD_LAZY);
    if (so == NULL) {
        reply("error: dlopen: %s", dlerror());
        return;
    }
    fn_register = (int (*)(void *)) dlsym(so, "FLBPluginRegister");
    fn_unregister = (int (*)(void *)) dlsym(so, "FLBPluginUnregister");
    fn_preexit = (int (*)(int)) dlsym(so, "FLBPluginOutputPreExit");
    fn_stats = (int (*)(char *, int)) dlsym(so, "SmtpoutRuntimeStats");
    /* proxy_go_output_register: FLBPluginInit is required, the rest optional. */
    plugin.cb_init = (int (*)(struct flbgo_output_plugin *)) dlsym(so, "FLBPluginInit");
    plugin.cb_flush = (int (*)(const void *, size_t, const char *)) dlsym(so, "FLBPluginFlush");
    plugin.cb_flush_ctx = (int (*)(void *, const void *, size_t, char *)) dlsym(so, "FLBPluginFlushCtx");
    plugin.cb_exit = (int (*)(void)) dlsym(so, "FLBPluginExit");
    plugin.cb_exit_ctx = (int (*)(void *)) dlsym(so, "FLBPluginExitCtx");
    if (fn_register == NULL || plugin.cb_init == NULL ||
        (plugin.cb_flush == NULL && plugin.cb_flush_ctx == NULL)) {
        reply("error: missing export (FLBPluginRegister, FLBPluginInit or a flush)");
        return;
    }
    reply("load -> ok exports=%s%s%s%s%s%s",
          "register,init",
          plugin.cb_flush_ctx ? ",flushctx" : "",
          plugin.cb_flush ? ",flush" : "",
          plugin.cb_exit_ctx ? ",exitctx" : "",
          plugin.cb_exit ? ",exit" : "",
          fn_unregister ? ",unregister" : "");
}

static void cmd_register(void)
{
    int rc;

    if (fn_register == NULL) {
        reply("error: not loaded");
        return;
    }
    memset(&def, 0, sizeof(def));
    rc = fn_register(&def);
    plugin.name = def.name ? strdup(def.name) : NULL;
    reply("register -> %d type=%d proxy=%d name=%s description=%s",
          rc, def.type, def.proxy, def.name ? def.name : "(null)",
          def.description ? def.description : "(null)");
}

static void cmd_set(char *rest)
{
    struct instance *ins;
    char *id = next_word(&rest);
    char *key = next_word(&rest);
    char *value;

    if (id == NULL || key == NULL || (ins = get_instance(id, 1)) == NULL) {
        reply("error: set I KEY VALUE");
        return;
    }
    while (*rest == ' ' || *rest == '\t') {
        rest++;
    }
    value = rest;
    for (int i = 0; i < ins->nkeys; i++) {
        if (strcasecmp(ins->keys[i], key) == 0) {
            free(ins->values[i]);
            ins->values[i] = strdup(value);
            reply("ok");
            return;
        }
    }
    if (ins->nkeys >= MAX_KEYS) {
        reply("error: too many keys");
        return;
    }
    ins->keys[ins->nkeys] = strdup(key);
    ins->values[ins->nkeys] = strdup(value);
    ins->nkeys++;
    reply("ok");
}

static void cmd_loglevel(char *rest)
{
    struct instance *ins;
    char *id = next_word(&rest);
    char *lvl = next_word(&rest);
    int level;

    if (id == NULL || lvl == NULL || (ins = get_instance(id, 1)) == NULL ||
        (level = parse_level(lvl)) < 0) {
        reply("error: loglevel I off|error|warn|info|debug|trace");
        return;
    }
    ins->log_level = level;
    reply("ok");
}

static void cmd_init(char *rest)
{
    struct instance *ins;
    char *id = next_word(&rest);
    int rc;

    if (id == NULL || (ins = get_instance(id, 1)) == NULL) {
        reply("error: init I");
        return;
    }
    if (plugin.cb_init == NULL) {
        reply("error: not loaded");
        return;
    }
    /* proxy_go_output_init: the shared plugin struct is pointed at this instance. */
    plugin.api = &api;
    plugin.o_ins = ins;
    plugin.context = &ins->context;
    rc = plugin.cb_init(&plugin);
    ins->initialised = rc > 0;
    reply("init %d -> %d", ins->id, rc);
}

static struct instance *flush_args(char **rest, char **tag, char **path)
{
    char *id = next_word(rest);
    struct instance *ins;

    *tag = next_word(rest);
    *path = next_word(rest);
    if (id == NULL || *tag == NULL || *path == NULL || (ins = get_instance(id, 0)) == NULL) {
        return NULL;
    }
    return ins;
}

static void cmd_flush(char *rest)
{
    char *tag, *path;
    struct instance *ins = flush_args(&rest, &tag, &path);
    int rc;

    if (ins == NULL) {
        reply("error: flush I TAG PATH (instance must exist)");
        return;
    }
    if (do_flush(ins, tag, path, &rc) != 0) {
        reply("error: cannot read %s: %s", path, strerror(errno));
        return;
    }
    reply("flush %d -> %d", ins->id, rc);
}

static void cmd_start(char *rest)
{
    char *tag, *path;
    struct instance *ins = flush_args(&rest, &tag, &path);
    int id;

    if (ins == NULL) {
        reply("error: start I TAG PATH (instance must exist)");
        return;
    }
    if ((id = start_job(JOB_FLUSH, ins, tag, path)) < 0) {
        reply("error: cannot start a thread");
        return;
    }
    reply("start %d", id);
}

static void cmd_exitasync(char *rest)
{
    char *idw = next_word(&rest);
    struct instance *ins;
    int id;

    if (idw == NULL || (ins = get_instance(idw, 0)) == NULL) {
        reply("error: exitasync I");
        return;
    }
    if ((id = start_job(JOB_EXIT, ins, NULL, NULL)) < 0) {
        reply("error: cannot start a thread");
        return;
    }
    reply("start %d", id);
}

static void cmd_join(char *rest)
{
    char *w = next_word(&rest);
    int id;

    if (w == NULL || (id = atoi(w)) < 0 || id >= njobs || jobs[id].joined) {
        reply("error: join J (an unjoined job)");
        return;
    }
    reply("join %d -> %d", id, join_job(id));
}

static void cmd_joinall(void)
{
    char buf[4096];
    size_t n = 0;
    int i;

    n += snprintf(buf + n, sizeof(buf) - n, "joinall ->");
    for (i = 0; i < njobs; i++) {
        if (jobs[i].used && !jobs[i].joined) {
            int rc = join_job(i);
            if (n < sizeof(buf)) {
                n += snprintf(buf + n, sizeof(buf) - n, " %d:%d", i, rc);
            }
        }
    }
    reply("%s", buf);
}

static void cmd_hold(void)
{
    pthread_mutex_lock(&gate_mutex);
    gate_closed = 1;
    pthread_mutex_unlock(&gate_mutex);
    reply("ok");
}

static void cmd_release(void)
{
    pthread_mutex_lock(&gate_mutex);
    gate_closed = 0;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_mutex);
    reply("ok");
}

static void cmd_exit(char *rest)
{
    char *id = next_word(&rest);
    struct instance *ins;

    if (id == NULL || (ins = get_instance(id, 0)) == NULL) {
        reply("error: exit I");
        return;
    }
    reply("exit %d -> %d", ins->id, do_exit(ins));
}

static void cmd_preexit(void)
{
    if (fn_preexit == NULL) {
        reply("preexit -> absent");
        return;
    }
    fn_preexit(0);
    reply("preexit -> ok");
}

static void cmd_cmetrics(char *rest)
{
    char *w = next_word(&rest);

    if (w == NULL || (strcmp(w, "on") != 0 && strcmp(w, "off") != 0)) {
        reply("error: cmetrics on|off");
        return;
    }
    cmetrics_on = strcmp(w, "on") == 0;
    reply("ok");
}

static void cmd_metrics(void)
{
    size_t cap = 64 * 1024, n = 0;
    char *buf = malloc(cap);
    int i;

    if (buf == NULL) {
        reply("error: out of memory");
        return;
    }
    pthread_mutex_lock(&stub_mutex);
    n += snprintf(buf + n, cap - n, "metrics ->");
    for (i = 0; i < stub_nseries && n < cap; i++) {
        struct stub_series *s = &stub_series[i];
        if (s->metric->histogram) {
            n += snprintf(buf + n, cap - n, " %s_count{name=\"%s\"}=%llu %s_sum{name=\"%s\"}=%.9g",
                          s->metric->fqname, s->label, (unsigned long long) s->count,
                          s->metric->fqname, s->label, s->sum);
        }
        else {
            n += snprintf(buf + n, cap - n, " %s{name=\"%s\"}=%.15g", s->metric->fqname, s->label, s->value);
        }
    }
    if (stub_error[0] != '\0' && n < cap) {
        snprintf(buf + n, cap - n, " error=%s", stub_error);
    }
    pthread_mutex_unlock(&stub_mutex);
    reply("%s", buf);
    free(buf);
}

static void cmd_unregister(void)
{
    if (fn_unregister == NULL) {
        reply("unregister -> absent");
        return;
    }
    fn_unregister(&def);
    reply("unregister -> ok");
}

/* ---- measurement: runtime stats, rusage, and the bench tool's flush loop ------------------- */

static void cmd_stats(void)
{
    char buf[1024];

    if (fn_stats == NULL) {
        reply("stats -> absent");
        return;
    }
    if (fn_stats(buf, (int) sizeof(buf)) < 0) {
        reply("error: SmtpoutRuntimeStats failed");
        return;
    }
    reply("stats -> %s", buf);
}

static long long tv_us(struct timeval tv)
{
    return (long long) tv.tv_sec * 1000000 + tv.tv_usec;
}

static void cmd_rusage(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    reply("rusage -> utime_us=%lld stime_us=%lld maxrss_kb=%ld",
          tv_us(ru.ru_utime), tv_us(ru.ru_stime), ru.ru_maxrss);
}

/* Fluent Bit's signal handling as src/fluent-bit.c (v4.2.8, v5.1.1) does it: signal(2), a
 * flag for the stop signals, and a handler for SIGHUP and SIGCONT that installs every
 * handler again (flb_signal_init), replacing whatever a plugin chained in front. */
static volatile sig_atomic_t fb_stops, fb_reinstalls;
static void fb_signal_init(void);

static void fb_break_loop(int sig)
{
    (void) sig;
    fb_stops++;
}

static void fb_signal_handler(int sig)
{
    (void) sig;
    fb_signal_init();
    fb_reinstalls++;
}

static void fb_signal_init(void)
{
    signal(SIGINT, fb_break_loop);
    signal(SIGQUIT, fb_break_loop);
    signal(SIGHUP, fb_signal_handler);
    signal(SIGCONT, fb_signal_handler);
    signal(SIGTERM, fb_break_loop);
}

static void cmd_fbsignals(void)
{
    fb_signal_init();
    reply("fbsignals -> ok");
}

static void cmd_signal(char *rest)
{
    static const struct { const char *name; int sig; } sigs[] = {
        {"TERM", SIGTERM}, {"INT", SIGINT}, {"QUIT", SIGQUIT}, {"HUP", SIGHUP}, {"CONT", SIGCONT},
    };
    char *w = next_word(&rest);
    int sig = 0;
    for (size_t i = 0; w != NULL && i < sizeof sigs / sizeof sigs[0]; i++) {
        if (strcmp(w, sigs[i].name) == 0) {
            sig = sigs[i].sig;
        }
    }
    if (sig == 0) {
        reply("error: signal TERM|INT|QUIT|HUP|CONT");
        return;
    }
    int stops = fb_stops, reinstalls = fb_reinstalls;
    if (kill(getpid(), sig) != 0) {
        reply("error: kill: %s", strerror(errno));
        return;
    }
    /* The signal may land on any thread (Go's included): wait for the handler, bounded. */
    for (int i = 0; i < 5000 && fb_stops == stops && fb_reinstalls == reinstalls; i++) {
        usleep(1000);
    }
    reply("signal %s -> stops=%d reinstalls=%d", w, (int) fb_stops, (int) fb_reinstalls);
}

#define MAX_BENCH_THREADS 64

struct bench_run {
    struct instance *ins;
    const char *tag;
    const char *data;
    size_t size;
    int flushes;
    pthread_mutex_t mutex;
    int next;
    int ok, retry, error;
};

/* bench_main flushes the shared chunk until the run's flush count is used up. Fluent Bit hands
 * its chunk buffer read-only too; each call gets its own NUL-terminated tag. */
static void *bench_main(void *arg)
{
    struct bench_run *b = arg;
    char tag[512];
    int k, rc;

    for (;;) {
        pthread_mutex_lock(&b->mutex);
        k = b->next < b->flushes ? b->next++ : -1;
        pthread_mutex_unlock(&b->mutex);
        if (k < 0) {
            return NULL;
        }
        snprintf(tag, sizeof(tag), "%s.%d", b->tag, k);
        if (plugin.cb_flush_ctx) {
            rc = plugin.cb_flush_ctx(b->ins->context.remote_context, b->data, b->size, tag);
        }
        else {
            rc = plugin.cb_flush(b->data, b->size, tag);
        }
        pthread_mutex_lock(&b->mutex);
        if (rc == 1) b->ok++;
        else if (rc == 2) b->retry++;
        else b->error++;
        pthread_mutex_unlock(&b->mutex);
    }
}

static void cmd_bench(char *rest)
{
    char *tag, *path;
    struct instance *ins = flush_args(&rest, &tag, &path);
    char *fw = next_word(&rest);
    char *tw = next_word(&rest);
    pthread_t threads[MAX_BENCH_THREADS];
    struct bench_run b;
    struct timespec t0, t1;
    struct rusage r0, r1;
    char *data;
    size_t size;
    int nthreads, started = 0, i;

    if (ins == NULL || fw == NULL || tw == NULL || atoi(fw) < 1 ||
        (nthreads = atoi(tw)) < 1 || nthreads > MAX_BENCH_THREADS || strlen(tag) > 400) {
        reply("error: bench I TAG PATH FLUSHES THREADS (instance must exist, 1..%d threads)",
              MAX_BENCH_THREADS);
        return;
    }
    if (read_file(path, &data, &size) != 0) {
        reply("error: cannot read %s: %s", path, strerror(errno));
        return;
    }
    memset(&b, 0, sizeof(b));
    b.ins = ins;
    b.tag = tag;
    b.data = data;
    b.size = size;
    b.flushes = atoi(fw);
    pthread_mutex_init(&b.mutex, NULL);
    getrusage(RUSAGE_SELF, &r0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (i = 0; i < nthreads; i++) {
        if (pthread_create(&threads[i], NULL, bench_main, &b) == 0) {
            started++;
        }
    }
    for (i = 0; i < started; i++) {
        pthread_join(threads[i], NULL);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    getrusage(RUSAGE_SELF, &r1);
    pthread_mutex_destroy(&b.mutex);
    free(data);
    if (started == 0) {
        reply("error: cannot start a thread");
        return;
    }
    reply("bench %d -> flushes=%d ok=%d retry=%d error=%d ns=%lld utime_us=%lld stime_us=%lld",
          ins->id, b.flushes, b.ok, b.retry, b.error,
          (long long) (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec),
          tv_us(r1.ru_utime) - tv_us(r0.ru_utime), tv_us(r1.ru_stime) - tv_us(r0.ru_stime));
}

int main(int argc, char **argv)
{
    FILE *in = stdin;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;

    if (argc != 2) {
        fprintf(stderr, "usage: %s SCRIPT|-\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "-") != 0 && (in = fopen(argv[1], "r")) == NULL) {
        fprintf(stderr, "host: %s: %s\n", argv[1], strerror(errno));
        return 2;
    }

    api.output_get_property = host_output_get_property;
    api.output_get_cmt_instance = host_output_get_cmt_instance;
    api.log_print = host_log_print;
    api.output_log_check = host_output_log_check;

    while ((len = getline(&line, &cap, in)) >= 0) {
        char *rest = line;
        char *cmd;

        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
            line[--len] = '\0';
        }
        cmd = next_word(&rest);
        if (cmd == NULL || cmd[0] == '#') {
            continue;
        }
        if (strcmp(cmd, "load") == 0) cmd_load(rest);
        else if (strcmp(cmd, "register") == 0) cmd_register();
        else if (strcmp(cmd, "set") == 0) cmd_set(rest);
        else if (strcmp(cmd, "loglevel") == 0) cmd_loglevel(rest);
        else if (strcmp(cmd, "init") == 0) cmd_init(rest);
        else if (strcmp(cmd, "flush") == 0) cmd_flush(rest);
        else if (strcmp(cmd, "start") == 0) cmd_start(rest);
        else if (strcmp(cmd, "exitasync") == 0) cmd_exitasync(rest);
        else if (strcmp(cmd, "join") == 0) cmd_join(rest);
        else if (strcmp(cmd, "joinall") == 0) cmd_joinall();
        else if (strcmp(cmd, "hold") == 0) cmd_hold();
        else if (strcmp(cmd, "release") == 0) cmd_release();
        else if (strcmp(cmd, "exit") == 0) cmd_exit(rest);
        else if (strcmp(cmd, "preexit") == 0) cmd_preexit();
        else if (strcmp(cmd, "unregister") == 0) cmd_unregister();
        else if (strcmp(cmd, "stats") == 0) cmd_stats();
        else if (strcmp(cmd, "rusage") == 0) cmd_rusage();
        else if (strcmp(cmd, "fbsignals") == 0) cmd_fbsignals();
        else if (strcmp(cmd, "signal") == 0) cmd_signal(rest);
        else if (strcmp(cmd, "bench") == 0) cmd_bench(rest);
        else if (strcmp(cmd, "cmetrics") == 0) cmd_cmetrics(rest);
        else if (strcmp(cmd, "metrics") == 0) cmd_metrics();
        else if (strcmp(cmd, "echo") == 0) {
            while (*rest == ' ') rest++;
            reply("%s", rest);
        }
        else if (strcmp(cmd, "quit") == 0) break;
        else reply("error: unknown command %s", cmd);
    }
    free(line);
    for (int i = 0; i < njobs; i++) {
        if (jobs[i].used && !jobs[i].joined) {
            join_job(i);
        }
    }
    return 0;
}
