/*
 * error.c - status strings, the per-thread last-error message, and the
 * allocator with its fault-injection hook (see common.h).
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"

static _Thread_local char last_error[512];

const char *frugal_status_str(frugal_status st) {
    switch (st) {
    case FRUGAL_OK: return "ok";
    case FRUGAL_ERR_INVALID_ARG: return "invalid argument";
    case FRUGAL_ERR_IO: return "i/o error";
    case FRUGAL_ERR_FORMAT: return "malformed model file";
    case FRUGAL_ERR_UNSUPPORTED: return "unsupported";
    case FRUGAL_ERR_NOMEM: return "out of memory";
    case FRUGAL_ERR_CONTEXT_FULL: return "context full";
    case FRUGAL_ERR_TEMPLATE: return "chat template error";
    }
    return "unknown status";
}

const char *frugal_last_error(void) { return last_error; }

void fr_clear_error(void) { last_error[0] = 0; }

frugal_status fr_error(frugal_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

/* Fault injection. The counters are process-wide and atomic (a server
 * allocates from several threads); tests that set a failure point run
 * single-threaded. */
static atomic_long alloc_count;
static atomic_long alloc_fail_at; /* 0 = never */

void fr_alloc_fail_after(long n) {
    atomic_store(&alloc_count, 0);
    atomic_store(&alloc_fail_at, n);
}

long fr_alloc_count(void) { return atomic_load(&alloc_count); }

static bool alloc_should_fail(void) {
    long count = atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed) + 1;
    long at = atomic_load_explicit(&alloc_fail_at, memory_order_relaxed);
    return at > 0 && count >= at;
}

bool fr_alloc_fault(void) { return alloc_should_fail(); }

void *fr_malloc(size_t n) {
    if (alloc_should_fail()) return NULL;
    return malloc(n ? n : 1);
}

void *fr_calloc(size_t count, size_t size) {
    if (alloc_should_fail()) return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *fr_realloc(void *p, size_t n) {
    if (alloc_should_fail()) return NULL;
    return realloc(p, n ? n : 1);
}

void fr_free(void *p) { free(p); }

char *fr_strndup(const char *s, size_t n) {
    char *d = fr_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

void frugal_free(void *p) { free(p); }
