/*
 * The parts of Fluent Bit's ABI a Go output plugin sees, declared in full so the plugin can
 * reach the logger (log.go) and cmetrics (metrics.go) that fluent-bit-go does not expose.
 * x86-64 layouts, checked against Fluent Bit v4.2.8:
 *
 *   struct flb_api              include/fluent-bit/flb_api.h (custom_* appended in later
 *                               releases; we only use fields before them)
 *   struct flbgo_output_plugin  src/proxy/go/go.h
 *   struct flb_plugin_proxy_context include/fluent-bit/flb_plugin_proxy.h
 *
 * Declarations only: this header is included by a file with //export functions.
 */
#ifndef SMTPOUT_FLBAPI_H
#define SMTPOUT_FLBAPI_H

#include <stddef.h>

struct smtpout_flb_api {
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

struct smtpout_proxy_context {
    void *remote_context;
    void *proxy;
};

/* Only the leading fields: the callbacks that follow are Fluent Bit's business. */
struct smtpout_flbgo_output_plugin {
    char *name;
    struct smtpout_flb_api *api;
    void *o_ins;
    struct smtpout_proxy_context *context;
};

#endif
