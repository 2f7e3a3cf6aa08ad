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
 * Layout: quant.h's groups of 16 rows (fr_pack_q4_1, shared with the
 * AVX2 level). The low nibbles of q[h] are B's row h (elements 4h ..
 * 4h + 3 of all 16 rows) and the high nibbles B's row h + 4: an AND and a
 * shift unpack two rows of B. For one token (decode), the same registers
 * are the operands of a VPDPBUSD against the token's 4 codes broadcast:
 * lane r accumulates row r's dot, with no sum across lanes.
 *
 * Arithmetic: kernels_amx.c's, bit for bit (fr_dot_exact_ref): per block
 * an exact integer sum, then acc = fma(d_w d_a, isum, acc) and
 * acc = fma(m_w, s_a, acc), block after block.
 */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
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

/* ---- prompts: bf16 products summed over the whole row -----------------------
 *
 * The integer path above must scale every block's sums by that block's
 * scales in vector registers (scale()), and on this hardware the tile unit
 * and the vector units do not overlap (bench/amx_overlap.c): the scaling
 * costs as much as the products. Prompts take another arithmetic: each
 * weight dequantized, w = fma(d, q, m), and each activation rounded to
 * bf16, their products summed in fp32 by TDPBF16PS over the whole row, the
 * sums never leaving the tile registers. A group's 16 rows are dequantized
 * once per chunk of up to PCHUNK tokens and used by all its panels; the
 * tokens' rows, already bf16 (matmul.c converts them once for all the
 * matrices and threads), are A's rows where they lie.
 *
 * B's layout for one block (16 rows of 64 bytes): row kp holds, for each
 * weight row r, the bf16 pair (w[r][2kp], w[r][2kp + 1]). With the packed
 * codes, elements 4h + i (low nibbles) and 16 + 4h + i (high nibbles) are
 * byte i of row r's dword in q[h]: shifts and masks of one vector give
 * one element of all 16 rows. A's rows are the tokens' 32 activations in
 * order: a block of the token rows themselves, one row stride apart.
 *
 * The sums do not depend on how tokens are grouped into panels, chunks or
 * threads, so a prompt's results are the same bits however it is split;
 * they differ in the last bits from the integer path's, which decoding
 * keeps (see matmul.c). */

#define PCHUNK 512                      /* tokens per chunk: a group is dequantized once per chunk (256: pp512 -6 %) */
#define PBLK (16 * 32)                  /* bf16 values of one block of B */

static fr_tile_config pconfigs[PT + 1][PT + 1]; /* [m0][m1]: panels of m0 and m1 tokens (m1 = 0: one panel) */
static pthread_once_t pconfigs_once = PTHREAD_ONCE_INIT;

static void pconfigs_init(void) {
    for (int m0 = 1; m0 <= PT; m0++)
        for (int m1 = 0; m1 <= PT; m1++) {
            fr_tile_config *c = &pconfigs[m0][m1];
            memset(c, 0, sizeof *c);
            c->palette = 1;
            const int rows[8] = { m0, m0, m1, m1, m0, m1, 16, 16 };
            for (int t = 0; t < 8; t++) c->rows[t] = (uint8_t)rows[t], c->colsb[t] = rows[t] ? 64 : 0;
        }
}

const fr_tile_config *fr_amx_pair_config(int m0, int m1) {
    pthread_once(&pconfigs_once, pconfigs_init);
    return &pconfigs[m0][m1];
}

/* One group's 16 rows, nb blocks, into B's layout. */
static void dequant_group(int64_t nb, const uint8_t *g, uint16_t *b) {
    static const uint16_t zip[32] = { 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31 };
    const __m512i idx = _mm512_loadu_si512(zip), lo = _mm512_set1_epi32(15);
    for (int64_t blk = 0; blk < nb; blk++, b += PBLK) {
        const uint8_t *x = g + blk * BLK;
        for (int l = 0; l < BLK; l += 64) _mm_prefetch((const char *)x + PF_AHEAD + l, _MM_HINT_T0);
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)x));
        const __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + 32)));
#pragma GCC unroll 4
        for (int h = 0; h < 4; h++) {
            const __m512i v = _mm512_loadu_si512(x + 64 + 64 * h);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) { /* k = 2 * high + j: bytes 2j, 2j + 1, low or high nibbles */
                const int s0 = 16 * (k & 1) + 4 * (k >> 1);
                __m512 w0 = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, s0), lo));
                __m512 w1 = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, s0 + 8), lo));
                w0 = _mm512_fmadd_ps(d, w0, m);
                w1 = _mm512_fmadd_ps(d, w1, m);
                const __m512i pair = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(w1, w0));
                _mm512_storeu_si512(b + 32 * (8 * (k >> 1) + 2 * h + (k & 1)), pair);
            }
        }
    }
}

/* Panels p (m0 tokens) and p + 16 (if two_p) against group 0 (and 1 if
 * two_g), all blocks, the sums stored into out (token-major, ldo). */
static ALWAYS_INLINE void prompt_panels(const uint8_t *a, size_t as, const uint16_t *b0, int64_t nb, int two_p,
                                        int two_g, float *out, size_t ldo) {
    const uint16_t *b1 = b0 + nb * PBLK;
    _tile_zero(TC0);
    if (two_g) _tile_zero(TC1);
    if (two_p) _tile_zero(TC2);
    if (two_p && two_g) _tile_zero(TC3);
    for (int64_t blk = 0; blk < nb; blk++) {
        _tile_loadd(TA0, a + blk * 64, as);
        _tile_loadd(TB0, b0 + blk * PBLK, 64);
        _tile_dpbf16ps(TC0, TA0, TB0);
        if (two_p) {
            _tile_loadd(TA1, a + PT * as + blk * 64, as);
            _tile_dpbf16ps(TC2, TA1, TB0);
        }
        if (two_g) {
            _tile_loadd(TB1, b1 + blk * PBLK, 64);
            _tile_dpbf16ps(TC1, TA0, TB1);
            if (two_p) _tile_dpbf16ps(TC3, TA1, TB1);
        }
    }
    const size_t stride = ldo * sizeof(float);
    _tile_stored(TC0, out, stride);
    if (two_g) _tile_stored(TC1, out + GR, stride);
    if (two_p) _tile_stored(TC2, out + PT * ldo, stride);
    if (two_p && two_g) _tile_stored(TC3, out + PT * ldo + GR, stride);
}

/* Without scratch memory: the same products one at a time (not the tile
 * unit's summation order, so not the same bits; only when a few hundred
 * KB cannot be had). */
static void prompt_scalar(int64_t n, const uint8_t *w, int nr, const uint8_t *x, size_t xs, int nc, float *out,
                          size_t ldo) {
    const int64_t nb = n / 32;
    for (int c = 0; c < nc; c++)
        for (int r = 0; r < nr; r++) {
            const uint8_t *g = w + (size_t)(r / GR) * GR * nb * Q4_1_SZ;
            const int lane = r % GR;
            float acc = 0;
            for (int64_t blk = 0; blk < nb; blk++) {
                const uint8_t *o = g + blk * BLK;
                const float d = _cvtsh_ss(load16(o + 2 * lane)), m = _cvtsh_ss(load16(o + 32 + 2 * lane));
                for (int e = 0; e < 32; e++) {
                    const int h = (e & 15) >> 2, byte = o[64 + 64 * h + 4 * lane + (e & 3)];
                    const float q = (float)(e < 16 ? byte & 15 : byte >> 4);
                    acc += fr_bf16_to_fp32(fr_fp32_to_bf16(fmaf(d, q, m))) *
                           fr_bf16_to_fp32(load16(x + c * xs + 2 * (blk * 32 + e)));
                }
            }
            out[c * ldo + r] = acc;
        }
}

static void dot_prompt_q4_1(int64_t n, const void *wv, int nr, const void *xv, size_t xs, int nc, float *out,
                            size_t ldo) {
    const int64_t nb = n / 32;
    const uint8_t *w = wv, *x = xv;
    uint16_t *b = fr_amx_scratch(FR_AMX_SCRATCH_PROMPT, (size_t)nb * 2 * PBLK * sizeof(uint16_t));
    if (!b) {
        prompt_scalar(n, w, nr, x, xs, nc, out, ldo);
        return;
    }
    const fr_tile_config *cfg = NULL;
    for (int t0 = 0; t0 < nc; t0 += PCHUNK) {
        const int nt = nc - t0 < PCHUNK ? nc - t0 : PCHUNK;
        for (int r = 0; r < nr; r += 2 * GR) {
            const int two_g = r + GR < nr;
            dequant_group(nb, w + (size_t)r * nb * Q4_1_SZ, b);
            if (two_g) dequant_group(nb, w + (size_t)(r + GR) * nb * Q4_1_SZ, b + nb * PBLK);
            for (int p = 0; p < nt; p += 2 * PT) {
                const int m0 = nt - p < PT ? nt - p : PT, rest = nt - p - PT;
                const int m1 = rest <= 0 ? 0 : rest < PT ? rest : PT;
                if (cfg != fr_amx_pair_config(m0, m1)) cfg = fr_amx_pair_config(m0, m1), _tile_loadconfig(cfg);
                const uint8_t *a = x + (size_t)(t0 + p) * xs;
                float *o = out + (size_t)(t0 + p) * ldo + r;
                if (m1 && two_g) prompt_panels(a, xs, b, nb, 1, 1, o, ldo); /* the common case, unrolled alone */
                else prompt_panels(a, xs, b, nb, m1 > 0, two_g, o, ldo);
            }
        }
    }
    _tile_release();
}

/* fp32 -> bf16, round to nearest even, as quant.c's fr_fp32_to_bf16 (for
 * finite values; integer arithmetic, so subnormals round like the rest
 * rather than being flushed as VCVTNEPS2BF16 does). */
static ALWAYS_INLINE __m256i bf16_of(__m512 v) {
    const __m512i x = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), odd);
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

static bool quant_bf16_checked(const float *x, void *y, int64_t n) {
    uint16_t *h = y;
    const __m512i exp = _mm512_set1_epi32(0x7f800000);
    __mmask16 bad = 0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        bad |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(v), exp), exp);
        _mm256_storeu_si256((__m256i *)(h + i), bf16_of(v));
    }
    bool finite = !bad;
    for (; i < n; i++) {
        finite &= isfinite(x[i]) != 0;
        h[i] = fr_fp32_to_bf16(x[i]);
    }
    return finite;
}

static void quant_bf16(const float *x, void *y, int64_t n) { quant_bf16_checked(x, y, n); }

void fr_kernels_fill_amx_packed(fr_kernel_table *t) {
    t->pack[FR_Q4_1] = fr_pack_q4_1;
    t->dot_packed[FR_Q4_1] = dot_packed_q4_1;
    t->dot_prompt[FR_Q4_1] = dot_prompt_q4_1;
    t->quant[FR_BF16] = quant_bf16;
    t->quant_checked[FR_BF16] = quant_bf16_checked;
}
