/*
 * common.h - what every source file of libfrugal shares: error reporting
 * and the allocator.
 *
 * Errors: a failing function formats its message with fr_error() and
 * returns the status it was given, so the caller sees one clear sentence
 * through frugal_last_error() and the code reads `return fr_error(...)`.
 *
 * Allocation goes through fr_malloc/fr_calloc/fr_realloc/fr_free so tests
 * can make the Nth allocation fail (fault injection) and check that every
 * failure path cleans up.
 */
#ifndef FR_COMMON_H
#define FR_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "frugal.h"

#if defined(__GNUC__)
#define FR_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FR_PRINTF(a, b)
#endif

/* Sets this thread's last error message; returns st. */
frugal_status fr_error(frugal_status st, const char *fmt, ...) FR_PRINTF(2, 3);
void fr_clear_error(void);

void *fr_malloc(size_t n);
void *fr_calloc(size_t count, size_t size);
void *fr_realloc(void *p, size_t n);
void fr_free(void *p);
char *fr_strndup(const char *s, size_t n);

/* Fault injection for tests: the n-th allocation from now (1-based) and every
 * one after it fails; 0 turns it off. Returns how many allocations have
 * happened since the last call. */
void fr_alloc_fail_after(long n);
/* One allocation's worth of fault injection for memory that does not come
 * from fr_malloc (the KV page pool): true when it must fail. */
bool fr_alloc_fault(void);
long fr_alloc_count(void);

#define FR_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FR_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
