/*
 * kernel_loops.h - multi-row (dot_rows) and tile (dot_tile) kernels made
 * of repeated single dot products, for the types and ISA levels that have
 * no dedicated ones. Each output is exactly one dot call, so these are
 * trivially bit-identical to it.
 */
#ifndef FR_KERNEL_LOOPS_H
#define FR_KERNEL_LOOPS_H

/* Decode asks for the row ROWS_AHEAD rows on while it computes this one:
 * the hardware prefetcher alone runs too little ahead of the kernels. */
#define ROWS_AHEAD 16
static inline void prefetch_row(const uint8_t *p, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o);
}

#define ROWS_OF(name, dot)                                                              \
    static void name(int64_t n, const void *w, size_t w_stride, const void *a, float *out, \
                     int nr) {                                                          \
        for (int r = 0; r < nr; r++) {                                                  \
            if (r + ROWS_AHEAD < nr) prefetch_row((const uint8_t *)w + (r + ROWS_AHEAD) * w_stride, w_stride); \
            out[r] = dot(n, (const uint8_t *)w + r * w_stride, a);                      \
        }                                                                               \
    }

#define TILE_OF(name, dot)                                                               \
    static void name(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, \
                     int nc, float *out, size_t ldo) {                                   \
        for (int c = 0; c < nc; c++)                                                     \
            for (int r = 0; r < nr; r++)                                                 \
                out[c * ldo + r] = dot(n, (const uint8_t *)w + r * ws, (const uint8_t *)a + c * as); \
    }

#endif
