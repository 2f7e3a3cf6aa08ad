/*
 * utf8.h - incremental UTF-8 validation for streaming output: bytes go in
 * as tokens decode, only complete valid sequences come out, invalid bytes
 * become U+FFFD.
 */
#ifndef FR_UTF8_H
#define FR_UTF8_H

#include <stddef.h>

typedef struct {
    unsigned char pend[4]; /* bytes of an incomplete sequence */
    int n_pend;
} fr_utf8_stream;

/* Consumes in[0..n); writes valid UTF-8 to out (cap must be >= 3*n + 8);
 * returns bytes written. */
size_t fr_utf8_push(fr_utf8_stream *s, const char *in, size_t n, char *out);
/* Emits U+FFFD for any pending incomplete sequence; returns bytes written. */
size_t fr_utf8_flush(fr_utf8_stream *s, char *out);

#endif
