/*
 * fuzz.h - what the fuzz targets share: an assertion that crashes (so
 * libFuzzer and the replay driver report it) and a strict UTF-8 check.
 *
 * Every target defines LLVMFuzzerTestOneInput and is built two ways:
 * with clang -fsanitize=fuzzer,address,undefined (make fuzz-build), and
 * with gcc -fsanitize=address,undefined plus fuzz/replay.c as its main()
 * (make fuzz-replay), which runs it over corpus directories.
 */
#ifndef FRUGAL_FUZZ_H
#define FRUGAL_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                     \
            abort();                                                            \
        }                                                                       \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Undefined behaviour ends the run even without UBSAN_OPTIONS (the checks
 * are built recoverable so that fuzz/ubsan.supp can silence known
 * findings; the Makefile passes it). */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) {
    return "halt_on_error=1:abort_on_error=1:print_stacktrace=1";
}

/* RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF. */
static inline bool fuzz_utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        if (b < 0x80) { i++; continue; }
        int len = b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3
                : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
        if (len == 0 || i + (size_t)len > n) return false;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
        if (s[i + 1] < lo || s[i + 1] > hi) return false;
        for (int k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return false;
        i += (size_t)len;
    }
    return true;
}

#endif
