/*
 * kernels_amx_packed.c - Q4_1 weights rearranged once, when the model
 * loads, for the AMX level: decode, batched decode and prefill then read
 * them without rearranging anything per call.
 *
 * Why: a tile product C (M x N int32) += A (M x K bytes) . B (K x N) wants
 * B in "VNNI" order: each 64-byte row of B holds, for each of the N
 * columns, four consecutive K elements. kernels_amx.c puts the weights in
 * A (their natural order) and the tokens in B, so it rearranges the tokens
 * per panel of 16 and transposes the results, and a panel of 8 sequences
 * decoding together leaves half of every lane of the scaling empty. Here
 * the weights are B, rearranged at load time, and the tokens are A, read
 * in place from the quantized activations, M = 1..16 of them: 8 tokens
 * cost half of 16.
 *
 * Layout: the same bytes as the original rows, permuted within each group
 * of 16 rows (so row r's group starts at r * row_bytes, as before). Block
 * b of group g, 16 x 20 = 320 bytes at (g * nb + b) * 320:
 *   d[16], m[16]  fp16, row r's scale and min
 *   q[4][16]      4 bytes each: q[h][r] = row r's code bytes 4h .. 4h + 3
 * A Q4_1 code byte j holds element j (low nibble) and j + 16 (high). So
 * the low nibbles of q[h] are B's row h (elements 4h .. 4h + 3 of all 16
 * rows) and the high nibbles B's row h + 4: an AND and a shift unpack two
 * rows of B. For one token (decode), the same registers are the operands
 * of a VPDPBUSD against the token's 4 codes broadcast: lane r accumulates
 * row r's dot, with no sum across lanes.
 *
 * Arithmetic: kernels_amx.c's, bit for bit (fr_dot_exact_ref): per block
 * an exact integer sum, then acc = fma(d_w d_a, isum, acc) and
 * acc = fma(m_w, s_a, acc), block after block.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include "quant.h"
#include "simd512.h"
#include "amx.h"

#define GR 16                      /* weight rows per group = lanes */
#define BLK (GR * Q4_1_SZ)         /* bytes of one block of a group */
#define PT 16                      /* tokens per panel (rows of A and C) */
#define CHUNK 128                  /* tokens per chunk: a group is unpacked once per chunk */
#define CHUNK_MAX (CHUNK + PT)     /* a last chunk takes up to a panel more rather than leave a short chunk after it */
#define MIN_TOKENS 4               /* fewer: the rows kernel, the tokens sharing each weight read */
#define MAX_ROW_TOKENS 3
#define PF_AHEAD (8 * BLK)         /* the weights are one stream: requested this far ahead (may pass the end: harmless) */

/* ---- packing ------------------------------------------------------------- */

static void pack_q4_1(int64_t n, const void *src, size_t ws, int64_t nr, void *dst) {
    const int64_t nb = n / 32;
    for (int64_t g = 0; g < nr / GR; g++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *o = (uint8_t *)dst + (g * nb + b) * BLK;
            for (int r = 0; r < GR; r++) {
                const uint8_t *x = (const uint8_t *)src + (size_t)(g * GR + r) * ws + b * Q4_1_SZ;
                memcpy(o + 2 * r, x, 2);      /* d */
                memcpy(o + 32 + 2 * r, x + 2, 2); /* m */
                for (int h = 0; h < 4; h++) memcpy(o + 64 + 64 * h + 4 * r, x + Q4_1_QS + 4 * h, 4);
            }
        }
}

/* B's eight rows of one block, codes 0..15 as bytes. */
static ALWAYS_INLINE void unpack(const uint8_t *q, __m512i b[8]) {
    const __m512i lo = _mm512_set1_epi8(15);
#pragma GCC unroll 4
    for (int h = 0; h < 4; h++) {
        __m512i v = _mm512_loadu_si512(q + 64 * h);
        b[h] = _mm512_and_si512(v, lo);
        b[h + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo);
    }
}

/* ---- decode: 16 rows against 1..MAX_ROW_TOKENS tokens ----------------------- */

static ALWAYS_INLINE void rows16(int64_t nb, const uint8_t *g, const uint8_t *a, size_t as, int nt, float *out,
                                 size_t ldo) {
    __m512 acc[MAX_ROW_TOKENS];
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *x = g + b * BLK;
        for (int l = 0; l < BLK; l += 64) _mm_prefetch((const char *)x + PF_AHEAD + l, _MM_HINT_T0);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)x));
        const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + 32)));
        __m512i q[8];
        unpack(x + 64, q);
        for (int t = 0; t < nt; t++) { /* the tokens take turns on the block: one read */
            const uint8_t *ab = a + t * as + b * Q8_1_SZ;
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int h = 0; h < 4; h++) {
                s0 = _mm512_dpbusd_epi32(s0, q[h], _mm512_set1_epi32((int)load32(ab + Q8_1_QS + 4 * h)));
                s1 = _mm512_dpbusd_epi32(s1, q[h + 4], _mm512_set1_epi32((int)load32(ab + Q8_1_QS + 16 + 4 * h)));
            }
            __m512 dd = _mm512_mul_ps(dw, _mm512_set1_ps(_cvtsh_ss(load16(ab))));
            acc[t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), acc[t]);
            acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(_cvtsh_ss(load16(ab + 2))), acc[t]);
        }
    }
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(out + t * ldo, acc[t]);
}

static void rows(int64_t nb, const uint8_t *w, int nr, const uint8_t *a, size_t as, int nc, float *out,
                 size_t ldo) {
    for (int c = 0; c < nc; c += MAX_ROW_TOKENS) {
        const int nt = nc - c < MAX_ROW_TOKENS ? nc - c : MAX_ROW_TOKENS;
        for (int r = 0; r < nr; r += GR)
            rows16(nb, w + (size_t)r * nb * Q4_1_SZ, a + c * as, as, nt, out + c * ldo + r, ldo);
    }
}

/* ---- tiles ------------------------------------------------------------------ */

/* One configuration per panel height M (amx.h: constants in memory). */
#define CFG(M) { .palette = 1, .colsb = {64, 64, 64, 64, 32, 32, 64, 64}, .rows = {M, M, M, M, M, M, 8, 8} }
static const fr_tile_config configs[PT] = {
    CFG(1), CFG(2), CFG(3), CFG(4), CFG(5), CFG(6), CFG(7), CFG(8),
    CFG(9), CFG(10), CFG(11), CFG(12), CFG(13), CFG(14), CFG(15), CFG(16),
};

/* Per-thread work space (amx.h's scratch). */
typedef struct {
    int8_t *b;      /* [nb][8][64] a group's codes, B's layout */
    float *dw, *mw; /* [nb][16] its scales and mins */
    int8_t *a;      /* [nb][CHUNK_MAX][32] the chunk's tokens' codes: A's rows, contiguous and aligned */
    float *da, *sa; /* [nb][CHUNK_MAX] their d_a, s_a */
    int32_t *c;     /* [2][PT][16] stored C tiles */
} work;

static work *work_get(int64_t nb) {
    const size_t need = sizeof(work) + 64 + (size_t)nb * (512 + 2 * GR * 4 + CHUNK_MAX * 32 + 2 * CHUNK_MAX * 4) + 2 * PT * 64;
    work *k = fr_amx_scratch(FR_AMX_SCRATCH_PACKED, need);
    if (!k) return NULL;
    uint8_t *p = (uint8_t *)(((uintptr_t)(k + 1) + 63) & ~(uintptr_t)63);
    k->c = (int32_t *)p, p += 2 * PT * 64;
    k->b = (int8_t *)p, p += (size_t)nb * 512;
    k->dw = (float *)p, p += (size_t)nb * GR * 4;
    k->mw = (float *)p, p += (size_t)nb * GR * 4;
    k->a = (int8_t *)p, p += (size_t)nb * CHUNK_MAX * 32;
    k->da = (float *)p, p += (size_t)nb * CHUNK_MAX * 4;
    k->sa = (float *)p;
    return k;
}

static void unpack_group(work *k, int64_t nb, const uint8_t *g) {
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *x = g + b * BLK;
        for (int l = 0; l < BLK; l += 64) _mm_prefetch((const char *)x + PF_AHEAD + l, _MM_HINT_T0);
        __m512i q[8];
        unpack(x + 64, q);
        for (int i = 0; i < 8; i++) _mm512_store_si512(k->b + b * 512 + 64 * i, q[i]);
        _mm512_store_ps(k->dw + b * GR, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)x)));
        _mm512_store_ps(k->mw + b * GR, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + 32))));
    }
}

/* acc[t] (lane r = row r) += d_w d_a isum + m_w s_a, block b, tokens t < m. */
static ALWAYS_INLINE void scale(__m512 acc[PT], const int32_t *c, const work *k, int64_t b, const float *da,
                                const float *sa, int m) {
    const __m512 dw = _mm512_load_ps(k->dw + b * GR), mw = _mm512_load_ps(k->mw + b * GR);
    /* constant indexes only: a varying one would keep acc in memory */
#pragma GCC unroll 16
    for (int t = 0; t < PT; t++)
        if (t < m) {
            __m512 dd = _mm512_mul_ps(dw, _mm512_set1_ps(da[b * CHUNK_MAX + t]));
            acc[t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(_mm512_load_si512(c + t * 16)), acc[t]);
            acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(sa[b * CHUNK_MAX + t]), acc[t]);
        }
}

#define ISSUE(t0, t1, blk)                                                   \
    do {                                                                     \
        _tile_zero(t0);                                                      \
        _tile_loadd(TA0, a + (blk) * CHUNK_MAX * 32, 32);                    \
        _tile_loadd(TB0, k->b + (blk) * 512, 64);                            \
        _tile_dpbsud(t0, TA0, TB0);                                          \
        if ((blk) + 1 < nb) {                                                \
            _tile_zero(t1);                                                  \
            _tile_loadd(TA1, a + ((blk) + 1) * CHUNK_MAX * 32, 32);          \
            _tile_loadd(TB1, k->b + ((blk) + 1) * 512, 64);                  \
            _tile_dpbsud(t1, TA1, TB1);                                      \
        }                                                                    \
    } while (0)

#define DRAIN(t0, t1, blk)                                                   \
    do {                                                                     \
        _tile_stored(t0, k->c, 64);                                          \
        scale(acc, k->c, k, blk, da, sa, m);                                 \
        if ((blk) + 1 < nb) {                                                \
            _tile_stored(t1, k->c + PT * 16, 64);                            \
            scale(acc, k->c + PT * 16, k, (blk) + 1, da, sa, m);             \
        }                                                                    \
    } while (0)

/* The unpacked group against m (1..16) tokens of the chunk, the first at
 * column p of k->a, k->da, k->sa: out[t * ldo + r]. `next`: the packed
 * group to request from memory meanwhile (or NULL). */
static ALWAYS_INLINE void tile_panel(const work *k, int64_t nb, int p, int m, float *out, size_t ldo,
                                     const uint8_t *next) {
    const int8_t *a = k->a + p * 32;
    const float *da = k->da + p, *sa = k->sa + p;
    __m512 acc[PT];
#pragma GCC unroll 16
    for (int t = 0; t < PT; t++) acc[t] = _mm512_setzero_ps();
    ISSUE(TC0, TC1, 0);
    for (int64_t b = 0; b < nb; b += 4) {
        if (next)
            for (int l = 0; l < 4 * BLK; l += 64) _mm_prefetch((const char *)next + b * BLK + l, _MM_HINT_T0);
        if (b + 2 < nb) ISSUE(TC2, TC3, b + 2);
        DRAIN(TC0, TC1, b);
        if (b + 2 >= nb) break;
        if (b + 4 < nb) ISSUE(TC0, TC1, b + 4);
        DRAIN(TC2, TC3, b + 2);
    }
#pragma GCC unroll 16
    for (int t = 0; t < PT; t++)
        if (t < m) _mm512_storeu_ps(out + t * ldo, acc[t]);
}

/* The chunk's nt tokens into A's layout, block by block so that the
 * writes are consecutive (token-major, they were a whole chunk apart:
 * one L1 set). */
static void stage_tokens(const work *k, int64_t nb, const uint8_t *a, size_t as, int nt) {
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *ab = a + b * Q8_1_SZ;
        int8_t *qa = k->a + b * CHUNK_MAX * 32;
        float *da = k->da + b * CHUNK_MAX, *sa = k->sa + b * CHUNK_MAX;
        for (int t = 0; t < nt; t++, ab += as) {
            da[t] = _cvtsh_ss(load16(ab));
            sa[t] = _cvtsh_ss(load16(ab + 2));
            _mm256_store_si256((__m256i *)(qa + t * 32), _mm256_loadu_si256((const __m256i *)(ab + Q8_1_QS)));
        }
    }
}

static void dot_packed_q4_1(int64_t n, const void *wv, int nr, const void *av, size_t as, int nc, float *out,
                            size_t ldo) {
    const int64_t nb = n / 32;
    const uint8_t *w = wv, *a = av;
    work *k = nc >= MIN_TOKENS ? work_get(nb) : NULL;
    if (!k) {
        rows(nb, w, nr, a, as, nc, out, ldo);
        return;
    }
    int cfg = 0;
    for (int t0 = 0, nt; t0 < nc; t0 += nt) {
        /* 263 tokens (a prefill chunk and seven decodes): 128 + 135, not
         * 128 + 128 + 7 and one more unpacking of every group */
        nt = nc - t0 <= CHUNK_MAX ? nc - t0 : CHUNK;
        stage_tokens(k, nb, a + (size_t)t0 * as, as, nt);
        for (int r = 0; r < nr; r += GR) {
            unpack_group(k, nb, w + (size_t)r * nb * Q4_1_SZ);
            /* a chunk of one panel (batched decode) computes about as long
             * as its group takes to come from memory: the next group is
             * requested meanwhile (unpacking asks only PF_AHEAD ahead).
             * Longer chunks compute long enough on a group for the
             * hardware to stream the next one unasked. */
            const uint8_t *next = nt <= PT && r + GR < nr ? w + (size_t)(r + GR) * nb * Q4_1_SZ : NULL;
            for (int p = 0; p < nt; p += PT, next = NULL) {
                const int m = nt - p < PT ? nt - p : PT;
                if (m != cfg) _tile_loadconfig(&configs[m - 1]), cfg = m;
                if (m == PT) /* whole panels: no tests of m in the loop */
                    tile_panel(k, nb, p, PT, out + (size_t)(t0 + p) * ldo + r, ldo, next);
                else
                    tile_panel(k, nb, p, m, out + (size_t)(t0 + p) * ldo + r, ldo, next);
            }
        }
    }
    _tile_release();
}

void fr_kernels_fill_amx_packed(fr_kernel_table *t) {
    t->pack[FR_Q4_1] = pack_q4_1;
    t->dot_packed[FR_Q4_1] = dot_packed_q4_1;
}
