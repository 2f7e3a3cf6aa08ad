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

/* Tokens in groups of TILE_TOKENS (their activation rows stay in cache);
 * for each group the weight rows go by once, each row used by every token
 * of the group while it is in L1, the rows ahead requested as in decode.
 * (Tokens outer, rows inner read every weight row again for each token:
 * two sequences decoded together ran slower than one.) */
#define TILE_TOKENS 32
#define TILE_OF(name, dot)                                                               \
    static void name(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, \
                     int nc, float *out, size_t ldo) {                                   \
        for (int c0 = 0; c0 < nc; c0 += TILE_TOKENS) {                                   \
            int c1 = nc - c0 < TILE_TOKENS ? nc : c0 + TILE_TOKENS;                      \
            for (int r = 0; r < nr; r++) {                                               \
                const uint8_t *row = (const uint8_t *)w + r * ws;                        \
                if (r + ROWS_AHEAD < nr) prefetch_row(row + ROWS_AHEAD * ws, ws);        \
                for (int c = c0; c < c1; c++)                                            \
                    out[c * ldo + r] = dot(n, row, (const uint8_t *)a + c * as);         \
            }                                                                            \
        }                                                                                \
    }

#endif
